/* Connection sets: connections in one dense array, so that a broadcast to
 * them (the live subscribers of a feed) is one pass, as a route's is
 * (ws_server.c). Each slot names its connection and the connection's
 * membership entry for the set; each membership names the set and the
 * slot: both sides find each other in O(1), so leaving is O(1) however
 * many sets a connection is in or however many members a set has. */
#include "ws_internal.h"

#include <stdlib.h>

struct set_slot {
    sluice_conn *c;
    size_t mi;                  /* its index in c->sets */
};

struct sluice_conn_set {
    struct set_slot *slots;
    size_t n, cap;
};

sluice_conn_set *sluice_conn_set_new(void)
{
    return calloc(1, sizeof(sluice_conn_set));
}

/* The member at pos leaves: the set's last slot takes its place, and so
 * does the connection's last membership. */
static void unlink_at(sluice_conn_set *s, size_t pos)
{
    sluice_conn *c = s->slots[pos].c;
    size_t mi = s->slots[pos].mi;
    struct set_slot last = s->slots[--s->n];
    if (pos != s->n) {
        s->slots[pos] = last;
        last.c->sets[last.mi].pos = pos;
    }
    struct sluice_set_member lm = c->sets[--c->nsets];
    if (mi != c->nsets) {
        c->sets[mi] = lm;
        lm.set->slots[lm.pos].mi = mi;
    }
    if (s->n == 0 && s->cap > 1024) {
        /* a crowd gone does not pin its array */
        free(s->slots);
        s->slots = NULL;
        s->cap = 0;
    }
}

void sluice_conn_leave_sets(sluice_conn *c)
{
    while (c->nsets) {
        struct sluice_set_member m = c->sets[c->nsets - 1];
        unlink_at(m.set, m.pos);
    }
    free(c->sets);
    c->sets = NULL;
    c->sets_cap = 0;
}

void sluice_conn_set_free(sluice_conn_set *s)
{
    if (!s)
        return;
    while (s->n)
        unlink_at(s, s->n - 1);
    free(s->slots);
    free(s);
}

/* c's membership entry for s, or NULL: a connection is in few sets. */
static const struct sluice_set_member *membership(const sluice_conn_set *s, const sluice_conn *c)
{
    for (size_t i = 0; i < c->nsets; i++)
        if (c->sets[i].set == s)
            return &c->sets[i];
    return NULL;
}

int sluice_conn_set_has(const sluice_conn_set *s, const sluice_conn *c)
{
    return s && c && membership(s, c) != NULL;
}

/* array (n of its *cap elements used) with room for one more: doubled,
 * from first, when full; NULL (array unchanged) when out of memory. */
static void *room(void *array, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return array;
    size_t more = *cap ? 2 * *cap : first;
    void *a = realloc(array, more * size);
    if (a)
        *cap = more;
    return a;
}

int sluice_conn_set_add(sluice_conn_set *s, sluice_conn *c)
{
    if (!s || !c)
        return SLUICE_EINVAL;
    if (c->state == SLUICE_CONN_CLOSED)
        return SLUICE_ECLOSED;
    if (membership(s, c))
        return SLUICE_OK;
    struct set_slot *slots = room(s->slots, &s->cap, s->n, sizeof *slots, 16);
    if (!slots)
        return SLUICE_ENOMEM;
    s->slots = slots;
    struct sluice_set_member *sets = room(c->sets, &c->sets_cap, c->nsets, sizeof *sets, 2);
    if (!sets)
        return SLUICE_ENOMEM;
    c->sets = sets;
    c->sets[c->nsets] = (struct sluice_set_member){ s, s->n };
    s->slots[s->n++] = (struct set_slot){ c, c->nsets++ };
    return SLUICE_OK;
}

int sluice_conn_set_remove(sluice_conn_set *s, sluice_conn *c)
{
    const struct sluice_set_member *m = s && c ? membership(s, c) : NULL;
    if (!m)
        return 0;
    unlink_at(s, m->pos);
    return 1;
}

size_t sluice_conn_set_count(const sluice_conn_set *s)
{
    return s ? s->n : 0;
}

int sluice_conn_set_broadcast(sluice_conn_set *s, const void *data, size_t len, int binary,
                              size_t *count)
{
    if (count)
        *count = 0;
    if (!s || (!data && len))
        return SLUICE_EINVAL;
    if (!s->n)
        return SLUICE_OK;
    sluice_payload *p = sluice_payload_new(data, len);
    if (!p)
        return SLUICE_ENOMEM;
    size_t n = 0;
    /* Queueing never makes a connection leave (a full queue only begins
     * its close), so the pass sees each member once. */
    for (size_t i = 0; i < s->n; i++) {
        if (i + SLUICE_PREFETCH_AHEAD < s->n)
            sluice_conn_prefetch(s->slots[i + SLUICE_PREFETCH_AHEAD].c);
        n += sluice_conn_send_payload(s->slots[i].c, p, binary) == SLUICE_OK;
    }
    sluice_payload_release(p);
    if (count)
        *count = n;
    return SLUICE_OK;
}
