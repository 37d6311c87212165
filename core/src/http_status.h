/* HTTP answers the server writes itself: status lines with their reason
 * phrase (libwebsockets 4.1 leaves many empty, e.g. 201 and 204) and the
 * JSON error answers of a gateway (instead of lws's HTML error pages). */
#ifndef SLUICE_HTTP_STATUS_H
#define SLUICE_HTTP_STATUS_H

#include <libwebsockets.h>

/* The RFC 9110 reason phrase of `status`, or "Unknown" for a code it
 * does not define. */
const char *sluice_http_reason(int status);

/* Adds the status line for `status` to a header block being built. */
int sluice_http_add_status(struct lws *wsi, int status, unsigned char **p, unsigned char *end);

/* 204 and 304 answers carry no body, hence no content headers. */
int sluice_http_status_has_body(int status);

/* Answers `status` with {"status":N,"error":"<reason or detail>"} and one
 * optional extra header (name with its colon). Returns -1: the connection
 * is closed after the answer, like every HTTP answer of the server. */
int sluice_http_error(struct lws *wsi, int status, const char *hname, const char *hval,
                      const char *detail);
/* The same with any number of extra headers: NULL-terminated name (with
 * its colon), value pairs, or NULL. detail is JSON-escaped. */
int sluice_http_error_headers(struct lws *wsi, int status, const char *const *headers,
                              const char *detail);

/* The same on a socket whose request lws has not parsed (it cannot answer
 * then): best effort, the caller closes the socket right after. */
void sluice_http_raw_error(int fd, int status);

#endif
