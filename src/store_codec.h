/* store_codec: the state record as bytes, and back.
 *
 * The GDBM store keeps every endpoint in one record (in its file and in the
 * live copy of store_live.h); the Redis store keeps each endpoint's entry
 * alone, in the same encoding. A record: a header (magic, version, sequence
 * number, size, count), the entries, the refusal counters, and the sequence
 * number again, so a copy torn in the middle is told from a whole one. An
 * entry: its counters (limit.h's state, 64-bit, host byte order), its id
 * and its ring of times, each padded to 8 bytes. Version 6 is written (its
 * entries hold the count of estimated answers, the pause and the history;
 * the clients' usage books follow the refusal counters); version 5 (no
 * count of estimated answers, no pause, no history, no books), version 4
 * (no token window: written before token limits), version 3 (no key state:
 * written before key pools, whose endpoint state becomes its one key's)
 * and version 2 (no metrics, no refusals, no day's tokens either) are still
 * read, in a record and as a Redis value. */
#ifndef API_TOGETHER_STORE_CODEC_H
#define API_TOGETHER_STORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynbuf.h"
#include "limit.h"
#include "store.h"

/* Refusal counters in a record: room for reasons yet to come. */
#define STORE_CODEC_REJECTS 8

/* One endpoint of a record. */
struct store_codec_ent {
	char *id;           /* owned */
	uint32_t id_len;    /* strlen(id) */
	uint32_t ring_room; /* times s.ring (owned) has room for */
	struct limit_state s;
};

/* The whole state, as one step of the GDBM store sees it. */
struct store_codec_rec {
	uint64_t seq;
	size_t n, cap;
	struct store_codec_ent *e;
	int64_t rejects[STORE_CODEC_REJECTS];
	/* Version 6: the clients' usage books (usage_book.h), kept as the
	 * bytes of the record's books section and read only when asked for:
	 * each book a client's length and its book's (32 bits each), the
	 * client's name and the book's bytes, each padded to 8. A step that
	 * counts in no book only copies them once, into the next record:
	 * books borrows them from the bytes decoded (which must then outlive
	 * r: store_codec_own_books) until a book changes, and then points to
	 * books_own, owned. */
	const char *books;
	size_t books_len;
	char *books_own;
};

/* One book of a record's section. */
struct store_codec_book {
	const char *client; /* not NUL-terminated */
	size_t client_len;
	const char *p; /* the book's bytes */
	size_t len;
};

/* Checks that the copy p[0..len) is whole and a record: 1 with its
 * sequence number in *seq, 0 when absent (p NULL), -1 when torn or not
 * one. */
int store_codec_check(const char *p, size_t len, uint64_t *seq);

/* Decodes a copy that store_codec_check accepted into *out. Returns 0, or
 * -1 when its insides are not consistent or memory runs out (then *out
 * holds nothing to free). out's books borrow from p[0..len), which must
 * outlive out unless store_codec_own_books is called. */
int store_codec_decode(const char *p, size_t len, struct store_codec_rec *out);

/* Makes r's books its own copy (nothing to do when they are). Returns 0, or
 * -1 when out of memory (r unchanged). */
int store_codec_own_books(struct store_codec_rec *r);

/* Encodes r. Returns a buffer the caller frees, its size in *len; NULL
 * when memory runs out. */
char *store_codec_encode(const struct store_codec_rec *r, size_t *len);

/* Encodes r into out, emptied first (its memory kept from step to step: a
 * record of a few hundred KB malloc'd and freed each step costs page
 * faults). Returns the record (valid until out changes), its size in
 * *len; NULL when out of memory or past out's cap. */
const char *store_codec_encode_into(const struct store_codec_rec *r, struct dynbuf *out,
				    size_t *len);

/* Frees what r holds and zeroes it. */
void store_codec_free(struct store_codec_rec *r);

/* The entry of id in r, added (zeroed) when missing; NULL when out of
 * memory. */
struct store_codec_ent *store_codec_entry(struct store_codec_rec *r, const char *id);

/* The state of id in r, or a zeroed one when r has none (read only). */
const struct limit_state *store_codec_find(const struct store_codec_rec *r, const char *id);

/* The book after *off in r's section (*off 0: the first) into *b, *off
 * moved past it. Returns true, or false when there is no more. */
bool store_codec_book_next(const struct store_codec_rec *r, size_t *off,
			   struct store_codec_book *b);

/* Sets client's book in r to the bytes p[0..len), added when missing.
 * Returns 0, or -1 when out of memory (r unchanged). */
int store_codec_book_set(struct store_codec_rec *r, const char *client, const char *p, size_t len);

/* Makes e's ring room for limit_ring_cap_for(rpm) times, as
 * limit_fit_ring needs. Returns 0, or -1 when out of memory (e unchanged). */
int store_codec_ring_room(struct store_codec_ent *e, long rpm);

/* The size of one entry alone (the Redis store's value). */
size_t store_codec_ent_size(const struct limit_state *s, size_t id_len);

/* Writes one entry of id (id_len bytes) and state s into p, which has
 * store_codec_ent_size bytes; the padding is zeroed. */
void store_codec_ent_put(char *p, const char *id, size_t id_len, const struct limit_state *s);

/* Reads one entry p[0..len) written by store_codec_ent_put into *s, its
 * ring into ring (room for LIMIT_RING_MAX times), checking that its id is
 * id (id_len bytes). Returns 0, or -1 when it is not such an entry. */
int store_codec_ent_get(const char *p, size_t len, const char *id, size_t id_len,
			struct limit_state *s, uint32_t *ring);

#endif
