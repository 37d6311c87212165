/* File watching for hot reload: inotify, watched by the loop (no polling).
 *
 * Files are watched through their directory, not their inode, so the ways
 * editors save all count as a change of the file's path: writing in place,
 * writing a temp file and renaming it over the original (vim, emacs, most
 * IDEs), and deleting then re-creating it. Bursts of events (an editor
 * writes, renames, chmods) are debounced: the callback runs once the
 * watched paths have been quiet for debounce_ms, with every path that
 * changed, each once. A file still open for writing is waited for (up to
 * 20 debounce periods) so a half-written file is not reported. */
#ifndef SLUICE_FSWATCH_H
#define SLUICE_FSWATCH_H

#include <stddef.h>
#include "sluice/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sluice_fswatch sluice_fswatch;

/* paths[0..n-1]: the changed paths, as they were added (a file added with
 * sluice_fswatch_add) or dir + "/" + name (a file in a directory added with
 * sluice_fswatch_add_dir). Valid during the call only. The callback may
 * add paths or free the watcher. */
typedef void (*sluice_fswatch_fn)(sluice_fswatch *fw, const char *const *paths,
                                  size_t n, void *ud);

/* debounce_ms 0: the default (100 ms). */
int sluice_fswatch_new(sluice_loop *loop, unsigned debounce_ms, sluice_fswatch_fn fn,
                       void *ud, sluice_fswatch **out, char *err, size_t errlen);
/* Watch one file (it may not exist yet; its directory must). Adding a
 * path twice is harmless. */
int sluice_fswatch_add(sluice_fswatch *fw, const char *path, char *err, size_t errlen);
/* Watch every file directly in dir whose name ends with suffix (NULL or
 * "": every file). Not recursive: add subdirectories separately. */
int sluice_fswatch_add_dir(sluice_fswatch *fw, const char *dir, const char *suffix,
                           char *err, size_t errlen);
/* Number of distinct files and directory patterns watched. */
size_t sluice_fswatch_count(const sluice_fswatch *fw);
/* Stops watching; pending changes are dropped. Safe inside the callback. */
void sluice_fswatch_free(sluice_fswatch *fw);

#ifdef __cplusplus
}
#endif
#endif
