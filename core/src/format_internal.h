/* printf into a caller's error buffer: the one formatter the core's files
 * share. Not a public header. */
#ifndef SLUICE_FORMAT_INTERNAL_H
#define SLUICE_FORMAT_INTERNAL_H

#include <stddef.h>

/* printf into err[errlen] (err may be NULL, errlen 0). */
void sluice_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, returning rc: `return sluice_failf(err, errlen, SLUICE_EINVAL, …)`. */
int sluice_failf(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
