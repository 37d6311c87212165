/* Error codes shared by every part of the core.
 * Functions return 0 on success or one of these (negative) codes; where a
 * human-readable reason exists it is written into a caller's err buffer. */
#ifndef SLUICE_ERROR_H
#define SLUICE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum sluice_error {
    SLUICE_OK = 0,
    SLUICE_EINVAL = -1,     /* bad argument or configuration */
    SLUICE_ENOMEM = -2,     /* allocation failed */
    SLUICE_ECLOSED = -3,    /* object (connection, consumer…) is closed */
    SLUICE_EFULL = -4,      /* a bounded queue is full */
    SLUICE_ETOOBIG = -5,    /* message larger than the configured maximum */
    SLUICE_EADDRINUSE = -6, /* listening port already in use */
    SLUICE_EKAFKA = -7,     /* librdkafka refused; see err text */
    SLUICE_ECONNECT = -8,   /* outgoing connection failed */
    SLUICE_EIO = -9,        /* other system error; see err text */
    SLUICE_ESTATE = -10,    /* call not valid in the object's current state */
    SLUICE_EMALFORMED = -11 /* input is not well-formed (e.g. not JSON) */
};

/* Upper-case code name without prefix, e.g. "CLOSED", for Lua's
 * `nil, "CODE: message", "CODE"` convention. */
const char *sluice_error_name(int code);
/* Short English description, e.g. "connection is closed". */
const char *sluice_error_text(int code);

#ifdef __cplusplus
}
#endif
#endif
