# SPDX-License-Identifier: GPL-2.0-only
"""cffi builder for ``quichsd.tls._gnutls`` (API mode, compiled at install time).

API mode is chosen for speed: a call costs ~0.1 µs and the module loads in
~3 ms, against ~0.3 µs and 50-90 ms for ABI mode.  Only what quichsd uses is
declared.
"""

from pathlib import Path

from cffi import FFI

CDEF = r"""
typedef struct gnutls_session_int *gnutls_session_t;
typedef struct gnutls_certificate_credentials_st *gnutls_certificate_credentials_t;
typedef struct gnutls_psk_client_credentials_st *gnutls_psk_client_credentials_t;
typedef struct gnutls_psk_server_credentials_st *gnutls_psk_server_credentials_t;
typedef struct gnutls_priority_st *gnutls_priority_t;
typedef struct gnutls_anti_replay_st *gnutls_anti_replay_t;
typedef long time_t;

typedef struct {
    unsigned char *data;
    unsigned int size;
} gnutls_datum_t;

#define GNUTLS_SERVER ...
#define GNUTLS_CLIENT ...
#define GNUTLS_ENABLE_EARLY_DATA ...
#define GNUTLS_NO_AUTO_SEND_TICKET ...
#define GNUTLS_NO_END_OF_EARLY_DATA ...
#define GNUTLS_E_SUCCESS ...
#define GNUTLS_E_AGAIN ...
#define GNUTLS_E_INTERRUPTED ...
#define GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR ...
#define GNUTLS_E_CERTIFICATE_ERROR ...
#define GNUTLS_E_NO_CERTIFICATE_FOUND ...
#define GNUTLS_E_CERTIFICATE_REQUIRED ...
#define GNUTLS_E_NO_APPLICATION_PROTOCOL ...
#define GNUTLS_E_DECRYPTION_FAILED ...
#define GNUTLS_E_INSUFFICIENT_CREDENTIALS ...
#define GNUTLS_E_UNEXPECTED_PACKET_LENGTH ...
#define GNUTLS_E_DB_ENTRY_EXISTS ...
#define GNUTLS_CRD_CERTIFICATE ...
#define GNUTLS_CRD_PSK ...
#define GNUTLS_MAC_SHA256 ...
#define GNUTLS_MAC_SHA384 ...
#define GNUTLS_X509_FMT_DER ...
#define GNUTLS_X509_FMT_PEM ...
#define GNUTLS_PSK_KEY_RAW ...
#define GNUTLS_ALPN_MANDATORY ...
#define GNUTLS_CERT_IGNORE ...
#define GNUTLS_CERT_REQUEST ...
#define GNUTLS_CERT_REQUIRE ...
#define GNUTLS_SFLAGS_EARLY_DATA ...
#define GNUTLS_CRT_PRINT_ONELINE ...
#define GNUTLS_NAME_DNS ...

int gnutls_init(gnutls_session_t *session, unsigned int flags);
void gnutls_deinit(gnutls_session_t session);
int gnutls_priority_init(gnutls_priority_t *cache, const char *priorities, const char **err_pos);
void gnutls_priority_deinit(gnutls_priority_t);
int gnutls_priority_set(gnutls_session_t session, gnutls_priority_t priority);
int gnutls_credentials_set(gnutls_session_t session, int type, void *cred);
int gnutls_server_name_set(gnutls_session_t session, int type, const void *name, size_t name_length);
void gnutls_session_set_verify_cert(gnutls_session_t session, const char *hostname, unsigned flags);
unsigned int gnutls_session_get_verify_cert_status(gnutls_session_t);
void gnutls_certificate_server_set_request(gnutls_session_t session, int req);
int gnutls_alpn_set_protocols(gnutls_session_t session, const gnutls_datum_t *protocols, unsigned protocols_size, unsigned flags);
int gnutls_alpn_get_selected_protocol(gnutls_session_t session, gnutls_datum_t *protocol);
int gnutls_session_set_data(gnutls_session_t session, const void *session_data, size_t session_data_size);
int gnutls_session_get_data2(gnutls_session_t session, gnutls_datum_t *data);
int gnutls_session_is_resumed(gnutls_session_t session);
unsigned gnutls_session_get_flags(gnutls_session_t session);
int gnutls_session_ticket_key_generate(gnutls_datum_t *key);
int gnutls_session_ticket_enable_server(gnutls_session_t session, const gnutls_datum_t *key);
int gnutls_session_ticket_send(gnutls_session_t session, unsigned nr, unsigned flags);
int gnutls_record_set_max_early_data_size(gnutls_session_t session, size_t size);
int gnutls_cipher_get(gnutls_session_t session);
const char *gnutls_cipher_get_name(int algorithm);
int gnutls_alert_send_appropriate(gnutls_session_t session, int err);
int gnutls_error_is_fatal(int error);
const char *gnutls_strerror(int error);
const char *gnutls_check_version(const char *req_version);
const gnutls_datum_t *gnutls_certificate_get_peers(gnutls_session_t session, unsigned int *list_size);
int gnutls_psk_server_get_username2(gnutls_session_t session, gnutls_datum_t *username);
int gnutls_certificate_verification_status_print(unsigned int status, int type, gnutls_datum_t *out, unsigned int flags);

int gnutls_certificate_allocate_credentials(gnutls_certificate_credentials_t *res);
void gnutls_certificate_free_credentials(gnutls_certificate_credentials_t sc);
int gnutls_certificate_set_x509_system_trust(gnutls_certificate_credentials_t cred);
int gnutls_certificate_set_x509_trust_mem(gnutls_certificate_credentials_t res, const gnutls_datum_t *ca, int type);
int gnutls_certificate_set_x509_crl_mem(gnutls_certificate_credentials_t res, const gnutls_datum_t *CRL, int type);
int gnutls_certificate_set_x509_key_mem2(gnutls_certificate_credentials_t res, const gnutls_datum_t *cert, const gnutls_datum_t *key, int type, const char *pass, unsigned int flags);

int gnutls_psk_allocate_client_credentials(gnutls_psk_client_credentials_t *sc);
void gnutls_psk_free_client_credentials(gnutls_psk_client_credentials_t sc);
int gnutls_psk_set_client_credentials2(gnutls_psk_client_credentials_t res, const gnutls_datum_t *username, const gnutls_datum_t *key, int format);
int gnutls_psk_allocate_server_credentials(gnutls_psk_server_credentials_t *sc);
void gnutls_psk_free_server_credentials(gnutls_psk_server_credentials_t sc);

int gnutls_anti_replay_init(gnutls_anti_replay_t *anti_replay);
void gnutls_anti_replay_deinit(gnutls_anti_replay_t anti_replay);
void gnutls_anti_replay_set_window(gnutls_anti_replay_t anti_replay, unsigned int window);
void gnutls_anti_replay_enable(gnutls_session_t session, gnutls_anti_replay_t anti_replay);
void gnutls_anti_replay_set_ptr(gnutls_anti_replay_t anti_replay, void *ptr);
void gnutls_anti_replay_set_add_function(gnutls_anti_replay_t, int (*add_func)(void *, time_t, const gnutls_datum_t *, const gnutls_datum_t *));

#define QD_KIND_DATA ...
#define QD_KIND_SECRET ...
#define QD_KIND_PEER_TP ...
#define QD_KIND_ALPN ...
#define QD_SECRET_TX ...
#define QD_SECRET_RX ...
#define QD_NO_TRANSPORT_PARAMETERS ...
#define QD_UNEXPECTED_MESSAGE ...
#define QD_STEP_INIT ...
#define QD_STEP_HOOKS ...
#define QD_STEP_PRIORITY ...
#define QD_STEP_CREDENTIALS ...
#define QD_STEP_TICKETS ...
#define QD_STEP_EARLY_DATA ...
#define QD_STEP_SNI ...
#define QD_STEP_RESUMPTION ...
#define QD_STEP_ALPN ...
#define QD_STEP_MEMORY ...
#define QD_STEP_TRANSPORT_PARAMETERS ...

struct qd_plan {
    unsigned flags;
    gnutls_priority_t priority;
    int cred_type;
    void *creds;
    void *psk_handle;
    const char *name;
    int verify;
    int resume;
    int cert_request;
    const unsigned char *ticket_key;
    int early_data;
    gnutls_anti_replay_t anti_replay;
    const gnutls_datum_t *alpn;
    unsigned alpn_count;
};

struct qd_journal {
    unsigned char *buf;
    size_t len;
    int failed_alloc;
    int psk_unknown;
    int psk_error;
    int peer_tp_seen;
    int sent_alert;
    int verify_failed;
    unsigned verify_status;
    int early_tx;
    int hrr;
    int bad_level;
    int bad_type;
    int setup_rc;
    int setup_step;
    int alpn_check;
    gnutls_session_t session;
    unsigned cipher;
    int resumed;
    int early_data_accepted;
    unsigned peer_count;
    const gnutls_datum_t *peers;
    ...;
};

int qd_session_attach(gnutls_session_t s, struct qd_journal *j);
struct qd_journal *qd_open(const struct qd_plan *p, const unsigned char *tp, size_t tp_len, const unsigned char *session_data, size_t session_data_size);
void qd_end(struct qd_journal *j);
void qd_close(struct qd_journal *j);
int qd_step(struct qd_journal *j, int klevel, const unsigned char *data, size_t size);
int qd_post_handshake(struct qd_journal *j, int klevel, const unsigned char *data, size_t size);
int qd_datum_set(gnutls_datum_t *d, const unsigned char *data, size_t size);
void qd_free(void *p);
void qd_keylog_to(int fd);
void qd_set_psk_server_callback(gnutls_psk_server_credentials_t cred);
typedef struct gnutls_privkey_st *gnutls_privkey_t;
int gnutls_privkey_init(gnutls_privkey_t *key);
void gnutls_privkey_deinit(gnutls_privkey_t key);
int gnutls_privkey_import_x509_raw(gnutls_privkey_t pkey, const gnutls_datum_t *data, int format, const char *password, unsigned int flags);
int gnutls_privkey_sign_data2(gnutls_privkey_t signer, int algo, unsigned int flags, const gnutls_datum_t *data, gnutls_datum_t *signature);
int gnutls_sign_get_id(const char *name);
int qd_cert_attach(gnutls_certificate_credentials_t cred, const gnutls_datum_t *chain, int chain_fmt, const gnutls_datum_t *key, int key_fmt);
void qd_certificate_free(gnutls_certificate_credentials_t cred);
int qd_psk_binder_hash_supported(void);
int qd_psk_allocate_client(gnutls_psk_client_credentials_t *sc, int mac);
int qd_psk_allocate_server(gnutls_psk_server_credentials_t *sc);

extern "Python" int qd_py_psk_lookup(void *, const unsigned char *, size_t, gnutls_datum_t *);
extern "Python" int qd_py_antireplay_add(void *, time_t, const gnutls_datum_t *, const gnutls_datum_t *);

/* Chain verification for `quichsd check` (quichsd/tls/verify.py): the trust list of
   the same credentials the daemon builds, verified as gnutls_certificate_verify_peers does. */
typedef struct gnutls_x509_crt_int *gnutls_x509_crt_t;
typedef struct gnutls_x509_crl_int *gnutls_x509_crl_t;
typedef struct gnutls_x509_trust_list_st *gnutls_x509_trust_list_t;
typedef struct { ...; } gnutls_typed_vdata_st;
typedef int gnutls_verify_output_function(gnutls_x509_crt_t cert, gnutls_x509_crt_t issuer, gnutls_x509_crl_t crl, unsigned int verification_output);
#define GNUTLS_VERIFY_DISABLE_TIME_CHECKS ...
#define GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS ...
#define GNUTLS_CERT_INVALID ...
#define GNUTLS_CERT_SIGNER_NOT_FOUND ...
#define GNUTLS_CRT_X509 ...
#define GNUTLS_E_CERTIFICATE_KEY_MISMATCH ...
#define GNUTLS_TL_GET_COPY ...
int gnutls_x509_crt_list_import2(gnutls_x509_crt_t **certs, unsigned int *size, const gnutls_datum_t *data, int format, unsigned int flags);
void gnutls_x509_crt_deinit(gnutls_x509_crt_t cert);
int gnutls_x509_crt_init(gnutls_x509_crt_t *cert);
int gnutls_x509_crt_import(gnutls_x509_crt_t cert, const gnutls_datum_t *data, int format);
int gnutls_x509_crt_get_dn3(gnutls_x509_crt_t crt, gnutls_datum_t *dn, unsigned flags);
int gnutls_x509_crt_export2(gnutls_x509_crt_t cert, int format, gnutls_datum_t *out);
void gnutls_certificate_get_trust_list(gnutls_certificate_credentials_t res, gnutls_x509_trust_list_t *tlist);
int gnutls_x509_trust_list_verify_crt2(gnutls_x509_trust_list_t list, gnutls_x509_crt_t *cert_list, unsigned int cert_list_size, gnutls_typed_vdata_st *data, unsigned int elements, unsigned int flags, unsigned int *voutput, gnutls_verify_output_function func);
int gnutls_x509_trust_list_get_issuer(gnutls_x509_trust_list_t list, gnutls_x509_crt_t cert, gnutls_x509_crt_t *issuer, unsigned int flags);

/* [debug] tls= (quichsd.tls.debuglog) */
void gnutls_global_set_log_level(int level);
void gnutls_global_set_log_function(void (*log_func)(int, const char *));
extern "Python" void qd_py_gnutls_log(int, const char *);

/* TCP + kTLS path (quichsd.ktls) */
#define GNUTLS_NONBLOCK ...
#define GNUTLS_E_PREMATURE_TERMINATION ...
#define GNUTLS_E_WARNING_ALERT_RECEIVED ...
#define GNUTLS_E_FATAL_ALERT_RECEIVED ...
#define GNUTLS_E_TIMEDOUT ...
#define GNUTLS_E_PUSH_ERROR ...
#define GNUTLS_E_PULL_ERROR ...
#define GNUTLS_E_INVALID_SESSION ...
#define GNUTLS_PRIORITY_INIT_DEF_APPEND ...
#define GNUTLS_TLS1_2 ...
#define GNUTLS_TLS1_3 ...
#define GNUTLS_AL_WARNING ...
#define GNUTLS_AL_FATAL ...
#define GNUTLS_A_ACCESS_DENIED ...
#define GNUTLS_A_UNKNOWN_PSK_IDENTITY ...
#define GNUTLS_CIPHER_AES_128_GCM ...
#define GNUTLS_CIPHER_AES_256_GCM ...
#define GNUTLS_CIPHER_AES_128_CCM ...
#define GNUTLS_CIPHER_CHACHA20_POLY1305 ...
#define GNUTLS_GROUP_INVALID ...
#define QD_TCP_VERIFY_NONE ...
#define QD_TCP_VERIFY_CLIENT ...
#define QD_TCP_VERIFY_SERVER ...

int gnutls_handshake(gnutls_session_t session);
void gnutls_handshake_set_timeout(gnutls_session_t session, unsigned int ms);
int gnutls_priority_init2(gnutls_priority_t *priority_cache, const char *priorities, const char **err_pos, unsigned flags);
int gnutls_priority_cipher_list(gnutls_priority_t pcache, const unsigned int **list);
int gnutls_group_get_id(const char *name);
int gnutls_record_get_direction(gnutls_session_t session);
size_t gnutls_record_check_pending(gnutls_session_t session);
size_t gnutls_record_get_max_size(gnutls_session_t session);
ssize_t gnutls_record_set_max_recv_size(gnutls_session_t session, size_t size);
int gnutls_protocol_get_version(gnutls_session_t session);
const char *gnutls_protocol_get_name(int version);
int gnutls_alert_send(gnutls_session_t session, int level, int desc);
int gnutls_alert_get(gnutls_session_t session);
const char *gnutls_alert_get_name(int alert);

struct qd_tcp {
    gnutls_session_t session;
    void *handle;
    int fd;
    int is_server;
    int verify_mode;
    const char *verify_host;
    int verify_failed;
    unsigned verify_status;
    int verify_rc;
    int psk_unknown;
    int psk_error;
    int sent_alert;
    int alert_rc;
    unsigned peer_record_limit;
    int last_errno;
};

void qd_tcp_attach(gnutls_session_t s, struct qd_tcp *t, int fd);
void qd_tcp_set_psk_server_callback(gnutls_psk_server_credentials_t cred);
int qd_tcp_record_state(gnutls_session_t s, unsigned read, unsigned char *iv, unsigned *iv_len, unsigned char *key, unsigned *key_len, unsigned char *seq);

/* Kernel keyrings (daemon/keyring.py): add_key(2) and the keyctl(2) operations used. */
long qd_add_key(const char *type, const char *description, const void *payload, size_t plen, int32_t keyring);
long qd_keyctl_read(int32_t key, char *buffer, size_t buflen);
long qd_keyctl_describe(int32_t key, char *buffer, size_t buflen);
long qd_keyctl_search(int32_t keyring, const char *type, const char *description, int32_t destination);
long qd_keyctl_link(int32_t key, int32_t keyring);
long qd_keyctl_unlink(int32_t key, int32_t keyring);
long qd_keyctl_setperm(int32_t key, uint32_t permissions);
"""

# The keyring calls through the C library's syscall(): the numbers come from this
# machine's <sys/syscall.h> and the operations from <linux/keyctl.h>, so no
# per-architecture table is kept in Python and no libkeyutils is needed.
KEYRING_C = r"""
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/keyctl.h>

long qd_add_key(const char *type, const char *description, const void *payload, size_t plen, int32_t keyring)
{ return syscall(__NR_add_key, type, description, payload, plen, keyring); }
long qd_keyctl_read(int32_t key, char *buffer, size_t buflen)
{ return syscall(__NR_keyctl, KEYCTL_READ, key, buffer, buflen); }
long qd_keyctl_describe(int32_t key, char *buffer, size_t buflen)
{ return syscall(__NR_keyctl, KEYCTL_DESCRIBE, key, buffer, buflen); }
long qd_keyctl_search(int32_t keyring, const char *type, const char *description, int32_t destination)
{ return syscall(__NR_keyctl, KEYCTL_SEARCH, keyring, type, description, destination); }
long qd_keyctl_link(int32_t key, int32_t keyring)
{ return syscall(__NR_keyctl, KEYCTL_LINK, key, keyring); }
long qd_keyctl_unlink(int32_t key, int32_t keyring)
{ return syscall(__NR_keyctl, KEYCTL_UNLINK, key, keyring); }
long qd_keyctl_setperm(int32_t key, uint32_t permissions)
{ return syscall(__NR_keyctl, KEYCTL_SETPERM, key, permissions); }
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "quichsd.tls._gnutls",
    (Path(__file__).with_name("_glue.c")).read_text() + KEYRING_C,
    libraries=["gnutls"],
    extra_compile_args=["-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
