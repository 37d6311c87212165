/* Query-string re-encoding (conn.query_string, req.query_string): the output
 * has only unreserved characters and %XX escapes, and decodes back to the
 * input; with keep_eq only the first '=' stays literal. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws_internal.h"

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void check(const char *in, size_t n, int keep_eq)
{
    char *out = malloc(3 * n + 1);
    if (!out)
        return;
    size_t len = sluice_query_encode_arg(out, in, keep_eq);
    if (len > 3 * n)
        abort();
    out[len] = '\0';
    size_t j = 0;
    int eqs = 0;
    for (size_t i = 0; i < len; i++, j++) {
        char c = out[i];
        if (c == '%') {
            if (i + 2 >= len)
                abort();
            int hi = hexval(out[i + 1]), lo = hexval(out[i + 2]);
            if (hi < 0 || lo < 0 || (char)(hi * 16 + lo) != in[j])
                abort();
            i += 2;
            continue;
        }
        if (c == '&' || c == '#' || c == '+' || c == ' ' || !isgraph((unsigned char)c))
            abort();
        if (c == '=' && (!keep_eq || ++eqs > 1))
            abort();
        if (c != in[j])
            abort();
    }
    if (j != n)
        abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    size_t n = strlen(in);      /* lws hands over C strings */
    check(in, n, 1);
    check(in, n, 0);
    free(in);
    return 0;
}
