/* Names and descriptions of the core's error codes. */
#include "loop_internal.h"

#include <stdarg.h>
#include <stdio.h>

const char *sluice_error_name(int code)
{
    switch (code) {
    case SLUICE_OK:         return "OK";
    case SLUICE_EINVAL:     return "INVAL";
    case SLUICE_ENOMEM:     return "NOMEM";
    case SLUICE_ECLOSED:    return "CLOSED";
    case SLUICE_EFULL:      return "FULL";
    case SLUICE_ETOOBIG:    return "TOOBIG";
    case SLUICE_EADDRINUSE: return "ADDRINUSE";
    case SLUICE_EKAFKA:     return "KAFKA";
    case SLUICE_ECONNECT:   return "CONNECT";
    case SLUICE_EIO:        return "IO";
    case SLUICE_ESTATE:     return "STATE";
    case SLUICE_EMALFORMED: return "MALFORMED";
    default:                return "UNKNOWN";
    }
}

const char *sluice_error_text(int code)
{
    switch (code) {
    case SLUICE_OK:         return "no error";
    case SLUICE_EINVAL:     return "invalid argument";
    case SLUICE_ENOMEM:     return "out of memory";
    case SLUICE_ECLOSED:    return "connection is closed";
    case SLUICE_EFULL:      return "queue is full";
    case SLUICE_ETOOBIG:    return "message too big";
    case SLUICE_EADDRINUSE: return "address already in use";
    case SLUICE_EKAFKA:     return "kafka error";
    case SLUICE_ECONNECT:   return "connection failed";
    case SLUICE_EIO:        return "system error";
    case SLUICE_ESTATE:     return "not valid in the current state";
    case SLUICE_EMALFORMED: return "malformed input";
    default:                return "unknown error";
    }
}

static void vformat(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
}

void sluice_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(err, errlen, fmt, ap);
    va_end(ap);
}

int sluice_failf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}
