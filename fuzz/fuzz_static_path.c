/* Static files: whatever URL path comes in, the file served stays inside
 * the static directory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws_internal.h"

#define DIR "/srv/static"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *path = malloc(size + 1);
    if (!path)
        return 0;
    memcpy(path, data, size);
    path[size] = '\0';
    char *file = sluice_static_file(DIR, path);
    if (file) {
        if (strncmp(file, DIR "/", sizeof DIR) != 0)
            abort();
        /* Resolve "." and ".." segments lexically: depth never below 0. */
        int depth = 0;
        const char *p = file + sizeof DIR - 1;
        while (*p) {
            while (*p == '/')
                p++;
            size_t seg = strcspn(p, "/");
            if (seg == 2 && !strncmp(p, "..", 2))
                depth--;
            else if (seg && !(seg == 1 && *p == '.'))
                depth++;
            if (depth < 0)
                abort();
            p += seg;
        }
        free(file);
    }
    free(path);
    return 0;
}
