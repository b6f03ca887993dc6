/* The state record as bytes: see store_codec.h. */
#include "store_codec.h"

#include <stdlib.h>
#include <string.h>

#define STORE_CODEC_MAGIC 0x41544732u /* "ATG2" */
/* 3 added the metrics' counters and the refusals, and the day's tokens (in
 * the same block: 3 was extended before its release); 4 a key's state; 5
 * the token window and the day's estimates in flight; 6 the count of
 * answers counted from their estimate, an operator's pause and the
 * history's one-minute buckets (history.h) in each entry, and the
 * clients' usage books (a section after the refusals). */
#define STORE_CODEC_VERSION 6u
#define STORE_CODEC_VERSION_V5 5u
#define STORE_CODEC_VERSION_V4 4u
#define STORE_CODEC_VERSION_V3 3u
#define STORE_CODEC_VERSION_V2 2u

_Static_assert(STORE_REJECT_N <= STORE_CODEC_REJECTS, "refusals outgrew their room on disk");

struct store_codec_head {
	uint32_t magic;
	uint32_t version;
	uint64_t seq;
	uint64_t size; /* of the whole record, trailing sequence number included */
	uint64_t n;
};

/* An entry starts with its id's length and the ring's three numbers, then
 * the 64-bit counters of struct limit_state from ring_base on: those up
 * to the metrics (all a version 2 entry has), then the metrics. */
#define STORE_CODEC_ENT_HEAD 16
#define STORE_CODEC_ENT_V2                                                                         \
	(offsetof(struct limit_state, retries) - offsetof(struct limit_state, ring_base))
#define STORE_CODEC_ENT_METRICS                                                                    \
	(offsetof(struct limit_state, key_state) - offsetof(struct limit_state, retries))
#define STORE_CODEC_ENT_KEY                                                                        \
	(offsetof(struct limit_state, tok_sec) - offsetof(struct limit_state, key_state))
#define STORE_CODEC_ENT_TOK                                                                        \
	(offsetof(struct limit_state, est_answers) - offsetof(struct limit_state, tok_sec))
#define STORE_CODEC_ENT_V6 (sizeof(struct limit_state) - offsetof(struct limit_state, est_answers))

/* The block is copied whole: it must hold no padding, and be what it was. */
_Static_assert(offsetof(struct limit_state, ring_len) ==
			       offsetof(struct limit_state, ring_cap) + 4 &&
		       offsetof(struct limit_state, ring_head) ==
			       offsetof(struct limit_state, ring_cap) + 8,
	       "the ring's numbers are not together");
_Static_assert(STORE_CODEC_ENT_V2 == 12 * 8 + LIMIT_BUCKETS * 8,
	       "the counters of a version 2 entry moved");
_Static_assert(STORE_CODEC_ENT_METRICS == (1 + STORE_CLASS_N + 2 * (STORE_HIST_N + 2) + 4) * 8,
	       "the metrics of an entry moved");
_Static_assert(STORE_CODEC_ENT_KEY == 2 * 8, "the key's state of an entry moved");
_Static_assert(STORE_CODEC_ENT_TOK == (2 * LIMIT_BUCKETS + 2) * 8, "the tokens of an entry moved");
_Static_assert(STORE_CODEC_ENT_V6 == 2 * 8 + sizeof(struct history),
	       "the counters of version 6 moved");
_Static_assert(offsetof(struct limit_state, hist) - offsetof(struct limit_state, est_answers) ==
		       2 * 8,
	       "the history of an entry moved");

static size_t
store_codec_pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

/* The counters of an entry of a version (2 to 6). */
static size_t
store_codec_counters(uint32_t version)
{
	return STORE_CODEC_ENT_HEAD + STORE_CODEC_ENT_V2 +
	       (version >= STORE_CODEC_VERSION_V3 ? STORE_CODEC_ENT_METRICS : 0) +
	       (version >= STORE_CODEC_VERSION_V4 ? STORE_CODEC_ENT_KEY : 0) +
	       (version >= STORE_CODEC_VERSION_V5 ? STORE_CODEC_ENT_TOK : 0) +
	       (version >= STORE_CODEC_VERSION ? STORE_CODEC_ENT_V6 : 0);
}

/* Reads the counters of an entry of version at p (which has enough bytes)
 * into s and its id's length into *id_len; the ring is not touched. What
 * an older version lacks is zero: its metrics, and the state of a key in
 * rotation (the endpoint's state becomes its one key's), the tokens
 * of before version 5 and the estimated answers of before 6 (counted from
 * then on), no pause and an empty hour of history before 6. */
static void
store_codec_counters_get(const char *p, uint32_t version, struct limit_state *s, uint32_t *id_len)
{
	size_t off = STORE_CODEC_ENT_HEAD + STORE_CODEC_ENT_V2;

	memcpy(id_len, p, 4);
	memcpy(&s->ring_cap, p + 4, 12);
	memcpy(&s->ring_base, p + STORE_CODEC_ENT_HEAD, STORE_CODEC_ENT_V2);
	if (version >= STORE_CODEC_VERSION_V3) {
		memcpy(&s->retries, p + off, STORE_CODEC_ENT_METRICS);
		off += STORE_CODEC_ENT_METRICS;
	} else {
		memset(&s->retries, 0, STORE_CODEC_ENT_METRICS);
	}
	if (version >= STORE_CODEC_VERSION_V4) {
		memcpy(&s->key_state, p + off, STORE_CODEC_ENT_KEY);
		off += STORE_CODEC_ENT_KEY;
	} else {
		memset(&s->key_state, 0, STORE_CODEC_ENT_KEY);
	}
	if (version >= STORE_CODEC_VERSION_V5) {
		memcpy(&s->tok_sec, p + off, STORE_CODEC_ENT_TOK);
		off += STORE_CODEC_ENT_TOK;
	} else {
		memset(&s->tok_sec, 0, STORE_CODEC_ENT_TOK);
	}
	if (version >= STORE_CODEC_VERSION)
		memcpy(&s->est_answers, p + off, STORE_CODEC_ENT_V6);
	else
		memset(&s->est_answers, 0, STORE_CODEC_ENT_V6);
}

/* Whether the ring numbers, the id's length, the key's state and the
 * history's newest minute of an entry are sound. STORE_KEY_PAUSED is a
 * reservation's reason, never a stored state (the pause is its own field):
 * /v1/status has no name for it. history.c indexes its buckets by that
 * minute (a negative one would reach before them) and adds 60 to it, so it
 * must be one history_minute can give. */
static bool
store_codec_counters_ok(const struct limit_state *s, uint32_t id_len)
{
	return id_len != 0 && s->ring_cap <= LIMIT_RING_MAX && s->ring_len <= s->ring_cap &&
	       (s->ring_cap == 0 || s->ring_head < s->ring_cap) && s->key_state >= 0 &&
	       s->key_state < STORE_KEY_STATE_N && s->key_state != STORE_KEY_PAUSED &&
	       s->hist.newest >= 0 && s->hist.newest <= INT64_MAX / HISTORY_MINUTE_MS;
}

/* The size of an entry of a version. */
static size_t
store_codec_ent_size_v(const struct limit_state *s, size_t id_len, uint32_t version)
{
	return store_codec_counters(version) + store_codec_pad8(id_len) +
	       store_codec_pad8((size_t)s->ring_cap * 4);
}

size_t
store_codec_ent_size(const struct limit_state *s, size_t id_len)
{
	return store_codec_ent_size_v(s, id_len, STORE_CODEC_VERSION);
}

void
store_codec_ent_put(char *p, const char *id, size_t id_len, const struct limit_state *s)
{
	uint32_t l = (uint32_t)id_len;
	size_t off = store_codec_counters(STORE_CODEC_VERSION);

	memcpy(p, &l, 4);
	memcpy(p + 4, &s->ring_cap, 12);
	memcpy(p + STORE_CODEC_ENT_HEAD, &s->ring_base,
	       STORE_CODEC_ENT_V2 + STORE_CODEC_ENT_METRICS + STORE_CODEC_ENT_KEY +
		       STORE_CODEC_ENT_TOK + STORE_CODEC_ENT_V6);
	memcpy(p + off, id, id_len);
	memset(p + off + id_len, 0, store_codec_pad8(id_len) - id_len);
	off += store_codec_pad8(id_len);
	size_t rl = (size_t)s->ring_cap * 4;
	if (rl > 0)
		memcpy(p + off, s->ring, rl);
	memset(p + off + rl, 0, store_codec_pad8(rl) - rl);
}

int
store_codec_ent_get(const char *p, size_t len, const char *id, size_t id_len, struct limit_state *s,
		    uint32_t *ring)
{
	/* An entry of version 3 (written before key pools), 4 (before token
	 * limits) or 5 (before the estimated answers, pauses and history) is read too: its size
	 * tells. */
	uint32_t version = STORE_CODEC_VERSION;
	size_t off = store_codec_counters(version);
	uint32_t l;

	if (len < store_codec_counters(STORE_CODEC_VERSION_V3))
		return -1;
	memcpy(&s->ring_cap, p + 4, 4);
	memcpy(&l, p, 4);
	if (s->ring_cap <= LIMIT_RING_MAX &&
	    len == store_codec_ent_size_v(s, l, STORE_CODEC_VERSION_V3)) {
		version = STORE_CODEC_VERSION_V3;
		off = store_codec_counters(version);
	} else if (s->ring_cap <= LIMIT_RING_MAX &&
		   len == store_codec_ent_size_v(s, l, STORE_CODEC_VERSION_V4)) {
		version = STORE_CODEC_VERSION_V4;
		off = store_codec_counters(version);
	} else if (s->ring_cap <= LIMIT_RING_MAX &&
		   len == store_codec_ent_size_v(s, l, STORE_CODEC_VERSION_V5)) {
		version = STORE_CODEC_VERSION_V5;
		off = store_codec_counters(version);
	} else if (len < off) {
		return -1;
	}
	store_codec_counters_get(p, version, s, &l);
	s->ring = ring;
	if (!store_codec_counters_ok(s, l) || l != id_len ||
	    len != store_codec_ent_size_v(s, id_len, version) || memcmp(p + off, id, id_len) != 0)
		return -1;
	off += store_codec_pad8(id_len);
	if (s->ring_cap > 0)
		memcpy(ring, p + off, (size_t)s->ring_cap * 4);
	return 0;
}

void
store_codec_free(struct store_codec_rec *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->e[i].id);
		free(r->e[i].s.ring);
	}
	free(r->e);
	free(r->books_own);
	memset(r, 0, sizeof(*r));
}

/* The head of one book of a record's section. */
struct store_codec_book_head {
	uint32_t client_len;
	uint32_t len;
};

/* Reads the book at p[off..len) of a section into *b: the size it takes,
 * or 0 when the bytes there are not one. */
static size_t
store_codec_book_at(const char *p, size_t len, size_t off, struct store_codec_book *b)
{
	struct store_codec_book_head h;
	size_t cl, bl;

	if (len - off < sizeof(h))
		return 0;
	memcpy(&h, p + off, sizeof(h));
	cl = store_codec_pad8(h.client_len);
	bl = store_codec_pad8(h.len);
	if (h.client_len == 0 || cl > len - off - sizeof(h) || bl > len - off - sizeof(h) - cl ||
	    memchr(p + off + sizeof(h), '\0', h.client_len) != NULL)
		return 0;
	b->client = p + off + sizeof(h);
	b->client_len = h.client_len;
	b->p = b->client + cl;
	b->len = h.len;
	return sizeof(h) + cl + bl;
}

/* Whether p[0..len) is a books section: books one after the other. (Each
 * book's own bytes are checked by usage_book_decode when read.) */
static bool
store_codec_books_ok(const char *p, size_t len)
{
	struct store_codec_book b;

	for (size_t off = 0, k; off < len; off += k)
		if ((k = store_codec_book_at(p, len, off, &b)) == 0)
			return false;
	return true;
}

bool
store_codec_book_next(const struct store_codec_rec *r, size_t *off, struct store_codec_book *b)
{
	size_t k;

	if (*off >= r->books_len || (k = store_codec_book_at(r->books, r->books_len, *off, b)) == 0)
		return false;
	*off += k;
	return true;
}

int
store_codec_book_set(struct store_codec_rec *r, const char *client, const char *p, size_t len)
{
	struct store_codec_book b;
	size_t cl = strlen(client), off = 0, at = 0, old = 0;
	bool found = false;

	while (!found) {
		at = off;
		if (!store_codec_book_next(r, &off, &b))
			break;
		found = b.client_len == cl && memcmp(b.client, client, cl) == 0;
		old = off - at;
	}
	if (!found) {
		at = r->books_len;
		old = 0;
	}
	struct store_codec_book_head h = {(uint32_t)cl, (uint32_t)len};
	size_t add = sizeof(h) + store_codec_pad8(cl) + store_codec_pad8(len);
	size_t n = r->books_len - old + add;
	char *q = malloc(n);
	if (q == NULL || cl > UINT32_MAX || len > UINT32_MAX) {
		free(q);
		return -1;
	}
	/* The book written anew in its place; the others as they were. */
	if (at > 0)
		memcpy(q, r->books, at);
	char *w = q + at;
	memset(w, 0, add);
	memcpy(w, &h, sizeof(h));
	memcpy(w + sizeof(h), client, cl);
	if (len > 0)
		memcpy(w + sizeof(h) + store_codec_pad8(cl), p, len);
	if (r->books_len > at + old)
		memcpy(w + add, r->books + at + old, r->books_len - at - old);
	free(r->books_own);
	r->books_own = q;
	r->books = q;
	r->books_len = n;
	return 0;
}

int
store_codec_check(const char *p, size_t len, uint64_t *seq)
{
	struct store_codec_head h;
	uint64_t tail;

	if (p == NULL)
		return 0;
	if (len < sizeof(h) + sizeof(tail))
		return -1;
	memcpy(&h, p, sizeof(h));
	memcpy(&tail, p + len - sizeof(tail), sizeof(tail));
	if (h.magic != STORE_CODEC_MAGIC ||
	    (h.version != STORE_CODEC_VERSION && h.version != STORE_CODEC_VERSION_V5 &&
	     h.version != STORE_CODEC_VERSION_V4 && h.version != STORE_CODEC_VERSION_V3 &&
	     h.version != STORE_CODEC_VERSION_V2) ||
	    h.size != len || tail != h.seq || h.n > 1000000)
		return -1;
	*seq = h.seq;
	return 1;
}

int
store_codec_decode(const char *p, size_t len, struct store_codec_rec *out)
{
	struct store_codec_head h;
	size_t off = sizeof(h), end = len - sizeof(uint64_t);

	memset(out, 0, sizeof(*out));
	memcpy(&h, p, sizeof(h));
	bool v3 = h.version >= STORE_CODEC_VERSION_V3;
	size_t counters = store_codec_counters(h.version);
	out->seq = h.seq;
	/* Not zeroed: each entry is set whole below, and entries beyond n are
	 * set by store_codec_entry (a step runs this twice per request:
	 * zeroing kilobytes that are written over anyway shows in its cost). */
	out->e = malloc((h.n + 1) * sizeof(*out->e));
	if (out->e == NULL)
		return -1;
	out->cap = h.n + 1;
	for (uint64_t i = 0; i < h.n; i++) {
		struct store_codec_ent *e = &out->e[i];
		e->id = NULL;
		e->s.ring = NULL;
		e->ring_room = 0;
		if (off + counters > end)
			goto bad;
		store_codec_counters_get(p + off, h.version, &e->s, &e->id_len);
		off += counters;
		out->n++;
		size_t idl = store_codec_pad8(e->id_len),
		       rl = store_codec_pad8((size_t)e->s.ring_cap * 4);
		if (!store_codec_counters_ok(&e->s, e->id_len) || off + idl + rl > end)
			goto bad;
		e->id = strndup(p + off, e->id_len);
		off += idl;
		if (e->id == NULL || strlen(e->id) != e->id_len)
			goto bad;
		if (e->s.ring_cap > 0) {
			e->s.ring = malloc((size_t)e->s.ring_cap * 4);
			if (e->s.ring == NULL)
				goto bad;
			e->ring_room = e->s.ring_cap;
			memcpy(e->s.ring, p + off, (size_t)e->s.ring_cap * 4);
		}
		off += rl;
	}
	if (v3) {
		if (off + sizeof(out->rejects) > end)
			goto bad;
		memcpy(out->rejects, p + off, sizeof(out->rejects));
		off += sizeof(out->rejects);
	}
	if (h.version >= STORE_CODEC_VERSION) {
		uint64_t bl;
		if (off + sizeof(bl) > end)
			goto bad;
		memcpy(&bl, p + off, sizeof(bl));
		off += sizeof(bl);
		if (bl > end - off || bl % 8 != 0 || !store_codec_books_ok(p + off, (size_t)bl))
			goto bad;
		out->books = p + off; /* borrowed: store_codec_own_books */
		out->books_len = (size_t)bl;
		off += (size_t)bl;
	}
	if (off != end)
		goto bad;
	return 0;
bad:
	store_codec_free(out);
	return -1;
}

int
store_codec_own_books(struct store_codec_rec *r)
{
	if (r->books_own != NULL || r->books_len == 0)
		return 0;
	r->books_own = malloc(r->books_len);
	if (r->books_own == NULL)
		return -1;
	memcpy(r->books_own, r->books, r->books_len);
	r->books = r->books_own;
	return 0;
}

/* The size of r's record. */
static size_t
store_codec_size(const struct store_codec_rec *r)
{
	size_t n = sizeof(struct store_codec_head) + sizeof(r->rejects) + 8 + r->books_len +
		   sizeof(uint64_t);

	for (size_t i = 0; i < r->n; i++)
		n += store_codec_ent_size(&r->e[i].s, r->e[i].id_len);
	return n;
}

/* Writes r's record of n bytes into p. */
static void
store_codec_put(const struct store_codec_rec *r, char *p, size_t n)
{
	struct store_codec_head h = {STORE_CODEC_MAGIC, STORE_CODEC_VERSION, r->seq, n, r->n};
	size_t off = sizeof(h);
	uint64_t bl = r->books_len;

	memcpy(p, &h, sizeof(h));
	for (size_t i = 0; i < r->n; i++) {
		const struct store_codec_ent *e = &r->e[i];
		store_codec_ent_put(p + off, e->id, e->id_len, &e->s);
		off += store_codec_ent_size(&e->s, e->id_len);
	}
	memcpy(p + off, r->rejects, sizeof(r->rejects));
	off += sizeof(r->rejects);
	memcpy(p + off, &bl, sizeof(bl));
	off += sizeof(bl);
	if (bl > 0)
		memcpy(p + off, r->books, r->books_len);
	off += r->books_len;
	memcpy(p + off, &r->seq, sizeof(r->seq));
}

char *
store_codec_encode(const struct store_codec_rec *r, size_t *len)
{
	size_t n = store_codec_size(r);
	char *p = malloc(n);

	if (p == NULL)
		return NULL;
	store_codec_put(r, p, n);
	*len = n;
	return p;
}

const char *
store_codec_encode_into(const struct store_codec_rec *r, struct dynbuf *out, size_t *len)
{
	size_t n = store_codec_size(r);

	dynbuf_reset(out);
	if (dynbuf_reserve(out, n) != 0)
		return NULL;
	store_codec_put(r, dynbuf_end(out), n);
	dynbuf_commit(out, n);
	*len = n;
	return dynbuf_ptr(out);
}

struct store_codec_ent *
store_codec_entry(struct store_codec_rec *r, const char *id)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->e[i].id, id) == 0)
			return &r->e[i];
	if (r->n == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 16;
		struct store_codec_ent *ne = realloc(r->e, ncap * sizeof(*ne));
		if (ne == NULL)
			return NULL;
		r->e = ne;
		r->cap = ncap;
	}
	struct store_codec_ent *e = &r->e[r->n];
	memset(e, 0, sizeof(*e));
	e->id = strdup(id);
	if (e->id == NULL)
		return NULL;
	e->id_len = (uint32_t)strlen(id);
	r->n++;
	return e;
}

const struct limit_state *
store_codec_find(const struct store_codec_rec *r, const char *id)
{
	static const struct limit_state none;

	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->e[i].id, id) == 0)
			return &r->e[i].s;
	return &none;
}

int
store_codec_ring_room(struct store_codec_ent *e, long rpm)
{
	uint32_t cap = limit_ring_cap_for(rpm);

	if (cap <= e->ring_room)
		return 0;
	uint32_t *ring = realloc(e->s.ring, (size_t)cap * sizeof(*ring));
	if (ring == NULL)
		return -1;
	e->s.ring = ring;
	e->ring_room = cap;
	return 0;
}
