/* Row schemas: a flat JSON object with a fixed set of typed fields,
 * checked and re-encoded in one pass over the text, without building any
 * intermediate value. A gateway stores rows that arrive as JSON text; this
 * is the per-row work (strict parsing, validation, a canonical encoding,
 * the key field's value) done in C so that a Lua handler only routes.
 *
 * Parsing is strict RFC 8259 (no leading zeros, no raw control characters
 * in strings, valid UTF-8, no lone surrogates, no trailing commas). The
 * canonical encoding has the schema's field order, no whitespace, strings
 * escaped as lua-cjson escapes them (", \, /, control characters, DEL),
 * other bytes as they are, and numbers written back so that they parse to
 * the same double: integers below 2^53 without a fraction or exponent,
 * others with the fewest of 15, 16 or 17 significant digits that do. */
#ifndef SLUICE_SCHEMA_H
#define SLUICE_SCHEMA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* JSON types a field accepts (a bit set). */
enum sluice_json_type {
    SLUICE_JSON_STRING = 1,
    SLUICE_JSON_NUMBER = 2,
    SLUICE_JSON_BOOLEAN = 4
};

typedef struct sluice_schema_field {
    const char *name;       /* copied by sluice_schema_new */
    unsigned types;         /* SLUICE_JSON_* bits, at least one */
    int optional;           /* may be absent */
    int nonempty;           /* a string value has at least one byte */
    int integer;            /* a number value has no fractional part */
    int has_min, has_max;   /* bounds for number values */
    double min, max;
} sluice_schema_field;

typedef struct sluice_schema sluice_schema;

/* One field's value after a successful check. */
typedef struct sluice_schema_value {
    unsigned type;          /* SLUICE_JSON_* of the value; 0: absent */
    double number;
    int boolean;
    size_t str_off, str_len;  /* decoded string: result->str + str_off */
} sluice_schema_value;

/* What one check produces. Owned by the caller and reused from call to
 * call: buffers grow as needed and are released by
 * sluice_schema_result_free. */
typedef struct sluice_schema_result {
    char *out;              /* canonical JSON text (not NUL-terminated) */
    size_t out_len, out_cap;
    char *str;              /* decoded strings, back to back */
    size_t str_len, str_cap;
    sluice_schema_value *values;  /* one per field, in schema order */
    size_t values_cap;
    char error[200];        /* why the last check failed */
} sluice_schema_result;

/* Returns SLUICE_OK, SLUICE_EINVAL (no fields, a field without a name or
 * type, a name given twice; the reason in err) or SLUICE_ENOMEM. */
int sluice_schema_new(sluice_schema **out, const sluice_schema_field *fields,
                      size_t nfields, char *err, size_t errlen);
/* Drops a reference: the schema is freed with its last one (a new schema
 * has one; sluice_schema_retain adds one, e.g. for a declared route that
 * checks rows with it while its creator may let it go). */
void sluice_schema_free(sluice_schema *s);
sluice_schema *sluice_schema_retain(sluice_schema *s);
size_t sluice_schema_nfields(const sluice_schema *s);
/* Index of the field called name, or -1. */
int sluice_schema_index(const sluice_schema *s, const char *name, size_t len);

/* Checks the JSON text against the schema. SLUICE_OK: result holds the
 * canonical text and the values. SLUICE_EMALFORMED: not JSON (result->error
 * says what and at which byte). SLUICE_EINVAL: JSON, but not a row of this
 * schema (result->error names the field and the rule). SLUICE_ENOMEM. */
int sluice_schema_check(const sluice_schema *s, const char *text, size_t len,
                        sluice_schema_result *result);
void sluice_schema_result_free(sluice_schema_result *result);

#ifdef __cplusplus
}
#endif
#endif
