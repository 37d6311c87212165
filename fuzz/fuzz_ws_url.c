/* ws:// URL parsing (app:connect): never reads out of bounds, and what it
 * accepts is well formed and parses the same way once written back. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    struct sluice_ws_url u;
    if (sluice_ws_parse_url(url, &u) == 0) {
        if (!u.host[0] || u.port < 1 || u.port > 65535 || u.path[0] != '/' ||
            strlen(u.host) >= sizeof u.host || strlen(u.path) >= sizeof u.path)
            abort();
        /* Written back (IPv6 hosts in brackets), it parses the same. */
        char again[sizeof u.path + sizeof u.host + 32];
        int v6 = strchr(u.host, ':') != NULL;
        snprintf(again, sizeof again, "%s://%s%s%s:%d%s", u.tls ? "wss" : "ws",
                 v6 ? "[" : "", u.host, v6 ? "]" : "", u.port, u.path);
        struct sluice_ws_url w;
        if (strlen(again) < sizeof again - 1 &&
            (sluice_ws_parse_url(again, &w) || w.tls != u.tls || w.port != u.port ||
             strcmp(w.host, u.host) || strcmp(w.path, u.path)))
            abort();
    }
    free(url);
    return 0;
}
