/* Row schemas (core/src/schema.c): strict parsing, the rules, the
 * canonical encoding, the values handed back, and the errors. */
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sluice/error.h"
#include "sluice/schema.h"

static sluice_schema *movies;
static sluice_schema_result res;

/* The canonical text of the last check, NUL-terminated. */
static const char *out_text(void)
{
    static char buf[4096];
    size_t n = res.out_len < sizeof buf - 1 ? res.out_len : sizeof buf - 1;
    memcpy(buf, res.out, n);
    buf[n] = 0;
    return buf;
}

static int run(const char *text)
{
    return sluice_schema_check(movies, text, strlen(text), &res);
}

/* Checks text and expects the canonical encoding want. */
static void accepts(const char *text, const char *want)
{
    int rc = run(text);
    CHECK_EQ_INT(rc, SLUICE_OK);
    if (rc != SLUICE_OK) {
        fprintf(stderr, "  refused %s: %s\n", text, res.error);
        return;
    }
    CHECK_EQ_STR(out_text(), want);
}

/* Checks text and expects code with an error starting with want. */
static void refuses(const char *text, int code, const char *want)
{
    int rc = run(text);
    CHECK_EQ_INT(rc, code);
    if (strncmp(res.error, want, strlen(want)) != 0) {
        check_failed++;
        fprintf(stderr, "  %s: error \"%s\", expected \"%s…\"\n", text, res.error, want);
    } else {
        check_passed++;
    }
}

#define ROW_TAIL "\"actorId\":\"nm1\",\"movieId\":\"tt1\",\"movieName\":\"M\",\"movieMinutes\":90"

static void test_new(void)
{
    char err[200];
    sluice_schema *s = NULL;
    sluice_schema_field none[1] = { { .name = "a" } };
    CHECK_EQ_INT(sluice_schema_new(&s, none, 0, err, sizeof err), SLUICE_EINVAL);
    CHECK_EQ_INT(sluice_schema_new(&s, none, 1, err, sizeof err), SLUICE_EINVAL);
    CHECK(strstr(err, "no type") != NULL);
    sluice_schema_field twice[2] = { { .name = "a", .types = SLUICE_JSON_STRING },
                                     { .name = "a", .types = SLUICE_JSON_NUMBER } };
    CHECK_EQ_INT(sluice_schema_new(&s, twice, 2, err, sizeof err), SLUICE_EINVAL);
    CHECK(strstr(err, "named twice") != NULL);
    CHECK(s == NULL);
    CHECK_EQ_INT(sluice_schema_nfields(movies), 6);
    CHECK_EQ_INT(sluice_schema_index(movies, "actorId", 7), 2);
    CHECK_EQ_INT(sluice_schema_index(movies, "actor", 5), -1);
}

static void test_canonical(void)
{
    /* Schema order, no whitespace, optional id left out. */
    accepts(" {\n\"movieMinutes\" : 90 ,\"movieName\":\"M\",\"movieId\":\"tt1\",\"actorId\":\"nm1\","
            "\"actorName\":\"A\"}\t",
            "{\"actorName\":\"A\"," ROW_TAIL "}");
    /* Values handed back: decoded strings, numbers. */
    accepts("{\"id\":\"r\\u00e9-1\",\"actorName\":\"A\"," ROW_TAIL "}",
            "{\"id\":\"ré-1\",\"actorName\":\"A\"," ROW_TAIL "}");
    CHECK_EQ_INT(res.values[0].type, SLUICE_JSON_STRING);
    CHECK(res.values[0].str_len == 5 && memcmp(res.str + res.values[0].str_off, "ré-1", 5) == 0);
    CHECK(res.values[2].str_len == 3 && memcmp(res.str + res.values[2].str_off, "nm1", 3) == 0);
    CHECK_EQ_INT(res.values[5].type, SLUICE_JSON_NUMBER);
    CHECK(res.values[5].number == 90);
    /* Escapes written as lua-cjson writes them. */
    accepts("{\"actorName\":\"a/b \\\"q\\\" \\\\ \\t\\n\\r\\b\\f \\u0001 \\u007f \\u00e9 \\ud83d\\ude00\"," ROW_TAIL "}",
            "{\"actorName\":\"a\\/b \\\"q\\\" \\\\ \\t\\n\\r\\b\\f \\u0001 \\u007f é 😀\"," ROW_TAIL "}");
    accepts("{\"actorName\":\"\\u0000\"," ROW_TAIL "}", "{\"actorName\":\"\\u0000\"," ROW_TAIL "}");
    CHECK_EQ_INT(res.values[1].str_len, 1);
    /* Numbers: integers as integers, others with as few digits as round-trip. */
    accepts("{\"id\":1e2,\"actorName\":\"A\"," ROW_TAIL "}", "{\"id\":100,\"actorName\":\"A\"," ROW_TAIL "}");
    accepts("{\"id\":-0,\"actorName\":\"A\"," ROW_TAIL "}", "{\"id\":-0,\"actorName\":\"A\"," ROW_TAIL "}");
    accepts("{\"id\":123456789012345678,\"actorName\":\"A\"," ROW_TAIL "}",
            "{\"id\":1.2345678901234568e+17,\"actorName\":\"A\"," ROW_TAIL "}");
    accepts("{\"id\":0.1,\"actorName\":\"A\"," ROW_TAIL "}", "{\"id\":0.1,\"actorName\":\"A\"," ROW_TAIL "}");
    accepts("{\"id\":0.30000000000000004,\"actorName\":\"A\"," ROW_TAIL "}",
            "{\"id\":0.30000000000000004,\"actorName\":\"A\"," ROW_TAIL "}");
    accepts("{\"id\":-12.5E-1,\"actorName\":\"A\"," ROW_TAIL "}", "{\"id\":-1.25,\"actorName\":\"A\"," ROW_TAIL "}");
    accepts("{\"id\":9007199254740993,\"actorName\":\"A\"," ROW_TAIL "}",
            "{\"id\":9007199254740992,\"actorName\":\"A\"," ROW_TAIL "}");
    /* A locale with a decimal comma changes nothing. */
    if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        accepts("{\"id\":2.5,\"actorName\":\"A\"," ROW_TAIL "}", "{\"id\":2.5,\"actorName\":\"A\"," ROW_TAIL "}");
        setlocale(LC_NUMERIC, "C");
    }
}

static void test_rules(void)
{
    refuses("{\"actorName\":\"\"," ROW_TAIL "}", SLUICE_EINVAL, "actorName must be a non-empty string");
    refuses("{\"actorName\":5," ROW_TAIL "}", SLUICE_EINVAL, "actorName must be a non-empty string");
    refuses("{\"id\":null,\"actorName\":\"A\"," ROW_TAIL "}", SLUICE_EINVAL, "id must be a string or a number");
    refuses("{\"id\":[1],\"actorName\":\"A\"," ROW_TAIL "}", SLUICE_EINVAL, "id must be a string or a number");
    refuses("{\"id\":true,\"actorName\":\"A\"," ROW_TAIL "}", SLUICE_EINVAL, "id must be a string or a number");
    refuses("{\"actorName\":\"A\",\"actorId\":\"nm1\",\"movieId\":\"tt1\",\"movieName\":\"M\",\"movieMinutes\":-1}",
            SLUICE_EINVAL, "movieMinutes must be at least 0");
    refuses("{\"actorName\":\"A\",\"actorId\":\"nm1\",\"movieId\":\"tt1\",\"movieName\":\"M\",\"movieMinutes\":1e999}",
            SLUICE_EINVAL, "movieMinutes is out of range");
    refuses("{\"actorName\":\"A\",\"actorId\":\"nm1\",\"movieId\":\"tt1\",\"movieMinutes\":1}",
            SLUICE_EINVAL, "movieName is missing");
    refuses("{\"actorName\":\"A\",\"extra\":{\"deep\":[1,2,{}]}," ROW_TAIL "}", SLUICE_EINVAL,
            "extra is not a known field");
    refuses("{\"actorName\":\"A\",\"actorName\":\"B\"," ROW_TAIL "}", SLUICE_EINVAL, "actorName is given twice");
    /* A field given twice is reported over another broken rule. */
    refuses("{\"actorName\":5,\"extra\":1,\"actorName\":\"B\"," ROW_TAIL "}", SLUICE_EINVAL,
            "actorName is given twice");
    refuses("[{\"actorName\":\"A\"}]", SLUICE_EINVAL, "a row must be a JSON object");
    refuses("\"text\"", SLUICE_EINVAL, "a row must be a JSON object");
    refuses("{}", SLUICE_EINVAL, "actorName is missing");

    /* Integer and maximum rules, on a schema of their own. */
    char err[200];
    sluice_schema *s;
    sluice_schema_field f[2] = {
        { .name = "n", .types = SLUICE_JSON_NUMBER, .integer = 1, .has_max = 1, .max = 10 },
        { .name = "b", .types = SLUICE_JSON_BOOLEAN, .optional = 1 },
    };
    CHECK_EQ_INT(sluice_schema_new(&s, f, 2, err, sizeof err), SLUICE_OK);
    CHECK_EQ_INT(sluice_schema_check(s, "{\"n\":2.5}", 9, &res), SLUICE_EINVAL);
    CHECK_EQ_STR(res.error, "n must be an integer");
    CHECK_EQ_INT(sluice_schema_check(s, "{\"n\":11}", 8, &res), SLUICE_EINVAL);
    CHECK_EQ_STR(res.error, "n must be at most 10");
    CHECK_EQ_INT(sluice_schema_check(s, "{\"b\":false,\"n\":1.0}", 19, &res), SLUICE_OK);
    CHECK_EQ_STR(out_text(), "{\"n\":1,\"b\":false}");
    CHECK_EQ_INT(res.values[1].type, SLUICE_JSON_BOOLEAN);
    CHECK_EQ_INT(res.values[1].boolean, 0);
    sluice_schema_free(s);
}

static void test_malformed(void)
{
    /* Not JSON is reported as such, before any rule. */
    refuses("", SLUICE_EMALFORMED, "unexpected end of text at byte 1");
    refuses("{\"extra\":1,", SLUICE_EMALFORMED, "expected a string key at byte 12");
    refuses("{\"actorName\":\"A\"} x", SLUICE_EMALFORMED, "unexpected text after the value at byte 19");
    refuses("{\"actorName\":\"A\",}", SLUICE_EMALFORMED, "expected a string key");
    refuses("{\"actorName\":\"A\" \"x\":1}", SLUICE_EMALFORMED, "expected ',' or '}'");
    refuses("{\"actorName\" \"A\"}", SLUICE_EMALFORMED, "expected ':'");
    refuses("{\"id\":01}", SLUICE_EMALFORMED, "leading zero in number");
    refuses("{\"id\":1.}", SLUICE_EMALFORMED, "invalid number");
    refuses("{\"id\":.5}", SLUICE_EMALFORMED, "unexpected character");
    refuses("{\"id\":+1}", SLUICE_EMALFORMED, "unexpected character");
    refuses("{\"id\":1e}", SLUICE_EMALFORMED, "invalid number");
    refuses("{\"id\":NaN}", SLUICE_EMALFORMED, "unexpected character");
    refuses("{\"id\":tru}", SLUICE_EMALFORMED, "invalid literal");
    refuses("{\"id\":\"a\tb\"}", SLUICE_EMALFORMED, "control character in string");
    refuses("{\"id\":\"\\x\"}", SLUICE_EMALFORMED, "invalid escape in string");
    refuses("{\"id\":\"\\u12g4\"}", SLUICE_EMALFORMED, "invalid \\u escape");
    refuses("{\"id\":\"\\ud800\"}", SLUICE_EMALFORMED, "lone surrogate");
    refuses("{\"id\":\"\\udc00\"}", SLUICE_EMALFORMED, "lone surrogate");
    refuses("{\"id\":\"\\ud800\\u0041\"}", SLUICE_EMALFORMED, "lone surrogate");
    refuses("{\"id\":\"\xc3\"}", SLUICE_EMALFORMED, "invalid UTF-8");
    refuses("{\"id\":\"\xed\xa0\x80\"}", SLUICE_EMALFORMED, "invalid UTF-8");   /* encoded surrogate */
    refuses("{\"id\":\"\xc0\xaf\"}", SLUICE_EMALFORMED, "invalid UTF-8");       /* overlong */
    refuses("{\"id\":\"abc", SLUICE_EMALFORMED, "unterminated string");
    refuses("{\"extra\":[1,2", SLUICE_EMALFORMED, "expected ',' or ']'");
    /* Nesting inside a skipped value is bounded. */
    char deep[300] = "{\"extra\":";
    size_t n = strlen(deep);
    for (int i = 0; i < 100; i++) deep[n++] = '[';
    deep[n] = 0;
    refuses(deep, SLUICE_EMALFORMED, "nesting too deep");
    /* A text with a NUL byte inside. */
    CHECK_EQ_INT(sluice_schema_check(movies, "{\"id\":\"a\0b\"}", 12, &res), SLUICE_EMALFORMED);
    /* Every prefix of a valid row is malformed, none crashes. */
    const char *row = "{\"id\":\"x\\u00e9\",\"actorName\":\"A\"," ROW_TAIL "}";
    int all = 1;
    for (size_t i = 0; i < strlen(row); i++)
        if (sluice_schema_check(movies, row, i, &res) != SLUICE_EMALFORMED) all = 0;
    CHECK(all);
}

int main(void)
{
    char err[200];
    sluice_schema_field fields[] = {
        { .name = "id", .types = SLUICE_JSON_STRING | SLUICE_JSON_NUMBER, .optional = 1 },
        { .name = "actorName", .types = SLUICE_JSON_STRING, .nonempty = 1 },
        { .name = "actorId", .types = SLUICE_JSON_STRING, .nonempty = 1 },
        { .name = "movieId", .types = SLUICE_JSON_STRING, .nonempty = 1 },
        { .name = "movieName", .types = SLUICE_JSON_STRING, .nonempty = 1 },
        { .name = "movieMinutes", .types = SLUICE_JSON_NUMBER, .has_min = 1, .min = 0 },
    };
    if (sluice_schema_new(&movies, fields, 6, err, sizeof err) != SLUICE_OK) {
        fprintf(stderr, "schema: %s\n", err);
        return 1;
    }
    test_new();
    test_canonical();
    test_rules();
    test_malformed();
    sluice_schema_free(movies);
    sluice_schema_result_free(&res);
    return check_summary("test_schema");
}
