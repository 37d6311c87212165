/* The server's certificate, key and client CAs, loaded with OpenSSL into
 * the SSL_CTX that libwebsockets made for the vhost: read and checked
 * whole before anything is applied, so a bad file is one exact error and a
 * failed reload leaves the previous pair serving. */
#include "server_internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

/* A refused file: OpenSSL's queued errors are dropped with it. */
#define tls_fail(err, errlen, ...) \
    (ERR_clear_error(), sluice_failf(err, errlen, SLUICE_EINVAL, __VA_ARGS__))

/* Never prompt on the terminal for a passphrase: encrypted keys fail. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

static BIO *open_pem(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        tls_fail(err, errlen, "TLS %s %s: cannot read it: %s", what, path, strerror(errno));
        return NULL;
    }
    BIO *b = BIO_new_fp(f, BIO_CLOSE);
    if (!b) {
        fclose(f);
        tls_fail(err, errlen, "TLS %s %s: out of memory", what, path);
    }
    return b;
}

/* Every certificate in a PEM file, in order; NULL (err set) if none. */
static STACK_OF(X509) *read_certs(const char *what, const char *path, char *err, size_t errlen)
{
    BIO *b = open_pem(what, path, err, errlen);
    if (!b)
        return NULL;
    STACK_OF(X509) *certs = sk_X509_new_null();
    X509 *x;
    while (certs && (x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)))
        if (!sk_X509_push(certs, x))
            X509_free(x);
    BIO_free(b);
    ERR_clear_error();      /* the end of the file reads as an error */
    if (!certs || sk_X509_num(certs) == 0) {
        sk_X509_pop_free(certs, X509_free);
        tls_fail(err, errlen, "TLS %s %s: no PEM certificate in it", what, path);
        return NULL;
    }
    return certs;
}

int sluice_tls_use_pair(void *ssl_ctx, const char *cert, const char *key,
                        char *err, size_t errlen)
{
    STACK_OF(X509) *certs = read_certs("certificate", cert, err, errlen);
    if (!certs)
        return SLUICE_EINVAL;
    BIO *b = open_pem("key", key, err, errlen);
    if (!b) {
        sk_X509_pop_free(certs, X509_free);
        return SLUICE_EINVAL;
    }
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    int rc = SLUICE_OK;
    X509 *leaf = sk_X509_shift(certs);      /* the rest is its chain */
    if (!pkey)
        rc = tls_fail(err, errlen, "TLS key %s: no PEM private key in it "
                      "(an encrypted key is not supported)", key);
    else if (X509_check_private_key(leaf, pkey) != 1)
        rc = tls_fail(err, errlen, "TLS key %s does not belong to the certificate %s", key, cert);
    else if (ssl_ctx && SSL_CTX_use_cert_and_key(ssl_ctx, leaf, pkey, certs, 1) != 1)
        rc = tls_fail(err, errlen, "TLS certificate %s: OpenSSL refused it (%s)", cert,
                      ERR_reason_error_string(ERR_peek_last_error()));
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

int sluice_tls_use_ca(void *ssl_ctx, const char *ca, char *err, size_t errlen)
{
    STACK_OF(X509) *certs = read_certs("CA", ca, err, errlen);
    if (!certs)
        return SLUICE_EINVAL;
    int rc = SLUICE_OK;
    if (ssl_ctx) {
        X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
        STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
        for (int i = 0; i < sk_X509_num(certs) && rc == SLUICE_OK; i++) {
            X509 *x = sk_X509_value(certs, i);
            X509_NAME *n = X509_NAME_dup(X509_get_subject_name(x));
            if (!names || !n || !sk_X509_NAME_push(names, n) || !X509_STORE_add_cert(store, x)) {
                X509_NAME_free(n);
                rc = tls_fail(err, errlen, "TLS CA %s: OpenSSL refused it", ca);
            }
        }
        /* the CAs named to the client in the handshake */
        if (rc == SLUICE_OK)
            SSL_CTX_set_client_CA_list(ssl_ctx, names);
        else
            sk_X509_NAME_pop_free(names, X509_NAME_free);
    }
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

/* ---- the server's TLS ------------------------------------------------------- */

/* The TLS files are read and checked before anything listens: a bad one
 * is the one error of the start. */
int sluice_tls_server_config(sluice_server *s, const sluice_server_config *cfg,
                             char *err, size_t errlen)
{
    if (!cfg->tls_cert && !cfg->tls_key && !cfg->tls_ca)
        return SLUICE_OK;
    if (!cfg->tls_cert || !cfg->tls_key) {
        sluice_errf(err, errlen, "TLS needs both a certificate and its key (%s is missing)",
                    cfg->tls_cert ? "the key" : "the certificate");
        return SLUICE_EINVAL;
    }
    int rc = sluice_tls_use_pair(NULL, cfg->tls_cert, cfg->tls_key, err, errlen);
    if (!rc && cfg->tls_ca)
        rc = sluice_tls_use_ca(NULL, cfg->tls_ca, err, errlen);
    if (rc)
        return rc;
    s->tls_cert = sluice_strdup(cfg->tls_cert);
    s->tls_key = sluice_strdup(cfg->tls_key);
    s->tls_ca = cfg->tls_ca ? sluice_strdup(cfg->tls_ca) : NULL;
    if (!s->tls_cert || !s->tls_key || (cfg->tls_ca && !s->tls_ca))
        return SLUICE_ENOMEM;
    return SLUICE_OK;
}

int sluice_server_tls(const sluice_server *s) { return s && s->tls_cert; }

int sluice_server_reload_tls(sluice_server *s, char *err, size_t errlen)
{
    if (!s || !s->ssl_ctx) {
        sluice_errf(err, errlen, "this server does not serve TLS");
        return SLUICE_ESTATE;
    }
    /* New handshakes use the new pair; an open connection's SSL keeps the
     * certificate it was made with. */
    return sluice_tls_use_pair(s->ssl_ctx, s->tls_cert, s->tls_key, err, errlen);
}

int sluice_tls_server_ctx(sluice_server *s, void *ssl_ctx)
{
    char err[256];
    s->ssl_ctx = ssl_ctx;
    /* whatever the system's OpenSSL configuration allows */
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    if (sluice_tls_use_pair(ssl_ctx, s->tls_cert, s->tls_key, err, sizeof err) ||
        (s->tls_ca && sluice_tls_use_ca(ssl_ctx, s->tls_ca, err, sizeof err))) {
        sluice_loop_log(s->loop, SLUICE_LOG_ERROR, "%s", err);
        return 1;
    }
    return 0;
}
