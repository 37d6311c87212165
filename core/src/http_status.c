#include "http_status.h"
#include "json_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

const char *sluice_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

int sluice_http_add_status(struct lws *wsi, int status, unsigned char **p, unsigned char *end)
{
    unsigned char *line = *p;
    /* lws keeps the code for itself; on HTTP/1 the line it wrote is
     * rewritten with the reason phrase its tables lack (HTTP/2 has none). */
    if (lws_add_http_header_status(wsi, (unsigned int)status, p, end))
        return 1;
    if (*p - line < 9 || memcmp(line, "HTTP/1.", 7))
        return 0;
    /* (lws says HTTP/1.0 when refusing an upgrade; the server speaks 1.1) */
    int n = snprintf((char *)line, (size_t)(end - line), "HTTP/1.1 %d %s\r\n", status,
                     sluice_http_reason(status));
    if (n < 0 || n >= end - line)
        return 1;
    *p = line + n;
    return 0;
}

int sluice_http_status_has_body(int status)
{
    return status != 204 && status != 304 && !(status >= 100 && status < 200);
}

/* {"status":N,"error":"<detail or reason>"} into a malloc'd buffer. */
static char *error_body(int status, const char *detail, size_t *len)
{
    const char *text = detail ? detail : sluice_http_reason(status);
    size_t tlen = strlen(text);
    char *buf = malloc(48 + 6 * tlen);
    if (!buf)
        return NULL;
    size_t n = (size_t)sprintf(buf, "{\"status\":%d,\"error\":", status);
    n += sluice_json_write_string(buf + n, text, tlen);
    buf[n++] = '}';
    buf[n] = '\0';
    *len = n;
    return buf;
}

int sluice_http_error(struct lws *wsi, int status, const char *hname, const char *hval,
                      const char *detail)
{
    const char *const one[] = { hname, hval, NULL, NULL };
    return sluice_http_error_headers(wsi, status, hname ? one : NULL, detail);
}

int sluice_http_error_headers(struct lws *wsi, int status, const char *const *headers,
                              const char *detail)
{
    size_t blen = 0, cap = LWS_PRE + 512;
    char *body = error_body(status, detail, &blen);
    for (size_t i = 0; headers && headers[2 * i]; i++)
        cap += strlen(headers[2 * i]) + strlen(headers[2 * i + 1]) + 8;
    unsigned char *buf = malloc(cap + blen);
    if (!body || !buf) {
        free(body);
        free(buf);
        return -1;
    }
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + cap + blen;
    int bad = sluice_http_add_status(wsi, status, &p, end);
    for (size_t i = 0; !bad && headers && headers[2 * i]; i++)
        bad = lws_add_http_header_by_name(wsi, (const unsigned char *)headers[2 * i],
                                          (const unsigned char *)headers[2 * i + 1],
                                          (int)strlen(headers[2 * i + 1]), &p, end);
    if (!bad)
        bad = lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                           (const unsigned char *)"application/json", 16, &p, end) ||
              lws_add_http_header_content_length(wsi, (lws_filepos_t)blen, &p, end) ||
              lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                           (const unsigned char *)"close", 5, &p, end) ||
              lws_finalize_write_http_header(wsi, start, &p, end);
    if (!bad) {
        memcpy(start, body, blen);
        lws_write(wsi, start, blen, LWS_WRITE_HTTP_FINAL);
    }
    free(body);
    free(buf);
    return -1;
}

void sluice_http_raw_error(int fd, int status)
{
    char msg[384];
    size_t blen = 0;
    char *body = error_body(status, NULL, &blen);
    if (!body)
        return;
    int n = snprintf(msg, sizeof msg, "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                     "content-length: %zu\r\nconnection: close\r\n\r\n%s",
                     status, sluice_http_reason(status), blen, body);
    free(body);
    if (n > 0 && (size_t)n < sizeof msg && send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* the client is gone or not reading: nothing more to do */
    }
}
