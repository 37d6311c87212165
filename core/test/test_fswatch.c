/* File watching: in-place writes, editor-style saves (temp + rename),
 * delete and re-create, debounce of bursts, directories, and files still
 * open for writing. Real inotify on a temp directory. */
#include "check.h"
#include "sluice/fswatch.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct seen {
    int calls;
    char paths[16][512];
    int npaths;
    int free_in_callback;
};

static void on_change(sluice_fswatch *fw, const char *const *paths, size_t n, void *ud)
{
    struct seen *s = ud;
    s->calls++;
    s->npaths = 0;
    for (size_t i = 0; i < n && i < 16; i++) {
        snprintf(s->paths[i], sizeof s->paths[i], "%s", paths[i]);
        s->npaths++;
    }
    if (s->free_in_callback) sluice_fswatch_free(fw);
}

static void run_for(sluice_loop *loop, int ms)
{
    uint64_t end = sluice_now_ms() + (uint64_t)ms;
    while (sluice_now_ms() < end) sluice_loop_run_once(loop, 10);
}

/* Run until the callback was called `calls` times, or ms pass. */
static void run_until_calls(sluice_loop *loop, struct seen *s, int calls, int ms)
{
    uint64_t end = sluice_now_ms() + (uint64_t)ms;
    while (s->calls < calls && sluice_now_ms() < end) sluice_loop_run_once(loop, 10);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static int has_path(const struct seen *s, const char *path)
{
    for (int i = 0; i < s->npaths; i++)
        if (strcmp(s->paths[i], path) == 0) return 1;
    return 0;
}

int main(void)
{
    char tmpl[] = "/tmp/sluice-fswatch.XXXXXX";
    char *dir = mkdtemp(tmpl);
    char a[600], b[600], tmp[600], other[600], sub[600], subfile[600], hidden[600];
    char err[256] = "";
    sluice_loop *loop;
    sluice_loop_config cfg = { 0 };
    sluice_fswatch *fw;
    struct seen s;

    CHECK(dir != NULL);
    snprintf(a, sizeof a, "%s/app.lua", dir);
    snprintf(b, sizeof b, "%s/mod.lua", dir);
    snprintf(tmp, sizeof tmp, "%s/.app.lua.tmp", dir);
    snprintf(other, sizeof other, "%s/notes.txt", dir);
    snprintf(sub, sizeof sub, "%s/lib", dir);
    snprintf(subfile, sizeof subfile, "%s/lib/x.lua", dir);
    snprintf(hidden, sizeof hidden, "%s/lib/.x.lua.swp.lua", dir);
    write_file(a, "return 1\n");
    write_file(b, "return 2\n");
    mkdir(sub, 0700);

    CHECK_EQ_INT(sluice_loop_new(&cfg, &loop, err, sizeof err), 0);
    memset(&s, 0, sizeof s);
    CHECK_EQ_INT(sluice_fswatch_new(loop, 50, on_change, &s, &fw, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_fswatch_add(fw, a, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_fswatch_add(fw, a, err, sizeof err), 0);   /* twice: harmless */
    CHECK_EQ_INT(sluice_fswatch_add(fw, b, err, sizeof err), 0);
    CHECK_EQ_INT((int)sluice_fswatch_count(fw), 2);
    /* A missing directory is an error with a reason. */
    CHECK(sluice_fswatch_add(fw, "/nonexistent-dir-sluice/x.lua", err, sizeof err) < 0);
    CHECK(strstr(err, "/nonexistent-dir-sluice") != NULL);

    /* Nothing changed: no callback. */
    run_for(loop, 150);
    CHECK_EQ_INT(s.calls, 0);

    /* In-place write. */
    write_file(a, "return 3\n");
    run_until_calls(loop, &s, 1, 3000);
    CHECK_EQ_INT(s.calls, 1);
    CHECK_EQ_INT(s.npaths, 1);
    CHECK(has_path(&s, a));

    /* Editor-style save: write a temp file, rename it over the original. */
    write_file(tmp, "return 4\n");
    CHECK_EQ_INT(rename(tmp, a), 0);
    run_until_calls(loop, &s, 2, 3000);
    CHECK_EQ_INT(s.calls, 2);
    CHECK_EQ_INT(s.npaths, 1);
    CHECK(has_path(&s, a));
    /* ...and the path is still watched after its inode was replaced. */
    write_file(a, "return 5\n");
    run_until_calls(loop, &s, 3, 3000);
    CHECK_EQ_INT(s.calls, 3);

    /* Delete, then re-create later: both are changes of the path. */
    CHECK_EQ_INT(unlink(b), 0);
    run_until_calls(loop, &s, 4, 3000);
    CHECK_EQ_INT(s.calls, 4);
    CHECK(has_path(&s, b));
    write_file(b, "return 6\n");
    run_until_calls(loop, &s, 5, 3000);
    CHECK_EQ_INT(s.calls, 5);
    CHECK(has_path(&s, b));

    /* A burst of writes to two files: one callback naming both, once each. */
    for (int i = 0; i < 10; i++) {
        write_file(a, "return 7\n");
        write_file(b, "return 8\n");
    }
    run_until_calls(loop, &s, 6, 3000);
    run_for(loop, 200);
    CHECK_EQ_INT(s.calls, 6);
    CHECK_EQ_INT(s.npaths, 2);
    CHECK(has_path(&s, a) && has_path(&s, b));

    /* Another file in the same directory: ignored. */
    write_file(other, "hello\n");
    run_for(loop, 200);
    CHECK_EQ_INT(s.calls, 6);

    /* A file held open for writing is reported once it is closed. */
    {
        int fd = open(a, O_WRONLY | O_TRUNC);
        CHECK(write(fd, "return", 6) == 6);
        run_for(loop, 200);               /* > debounce, still open */
        CHECK_EQ_INT(s.calls, 6);
        CHECK(write(fd, " 9\n", 3) == 3);
        close(fd);
        run_until_calls(loop, &s, 7, 3000);
        CHECK_EQ_INT(s.calls, 7);
    }

    /* A directory pattern: *.lua files in lib/, hidden names ignored. */
    CHECK_EQ_INT(sluice_fswatch_add_dir(fw, sub, ".lua", err, sizeof err), 0);
    write_file(hidden, "x\n");
    run_for(loop, 200);
    CHECK_EQ_INT(s.calls, 7);
    write_file(subfile, "return 10\n");
    run_until_calls(loop, &s, 8, 3000);
    CHECK_EQ_INT(s.calls, 8);
    CHECK(has_path(&s, subfile));

    /* Freeing the watcher inside its own callback. */
    s.free_in_callback = 1;
    write_file(a, "return 11\n");
    run_until_calls(loop, &s, 9, 3000);
    CHECK_EQ_INT(s.calls, 9);
    write_file(a, "return 12\n");
    run_for(loop, 200);
    CHECK_EQ_INT(s.calls, 9);             /* gone: no more callbacks */

    /* Free with changes pending: nothing is delivered afterwards. The
     * quiet time is long enough that a loaded machine stalling the 20 ms
     * run cannot let it pass before the free; the wait after the free
     * outlasts it. */
    memset(&s, 0, sizeof s);
    CHECK_EQ_INT(sluice_fswatch_new(loop, 500, on_change, &s, &fw, err, sizeof err), 0);
    CHECK_EQ_INT(sluice_fswatch_add(fw, a, err, sizeof err), 0);
    write_file(a, "return 13\n");
    run_for(loop, 20);
    sluice_fswatch_free(fw);
    run_for(loop, 700);
    CHECK_EQ_INT(s.calls, 0);

    sluice_loop_free(loop);
    unlink(a); unlink(b); unlink(other); unlink(subfile); unlink(hidden);
    rmdir(sub);
    rmdir(dir);
    return check_summary("test_fswatch");
}
