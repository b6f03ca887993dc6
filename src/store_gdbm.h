/* store_gdbm: the store in a GDBM file on this host (store_gdbm.c says how).
 * For store.c only: everything else opens a store through store.h. */
#ifndef API_TOGETHER_STORE_GDBM_H
#define API_TOGETHER_STORE_GDBM_H

#include <stdbool.h>
#include <stddef.h>

#include "store_impl.h"

/* Opens the GDBM store at path, creating the file (mode 0600) unless
 * readonly, and checks it at once. Returns the handle, or NULL with the
 * reason in err. */
struct store *store_gdbm_open(const char *path, bool readonly, char *err, size_t errlen);

#endif
