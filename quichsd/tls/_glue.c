/*
 * C side of the quichsd GnuTLS binding.
 *
 * GnuTLS reports a QUIC handshake through callbacks (outgoing handshake bytes,
 * traffic secrets, transport parameters, alerts).  Calling into Python for each
 * of them costs far more than the work they do, so these callbacks only append
 * a record to a per-session journal; Python drains the journal once per step.
 *
 * Journal record: 8-byte header (kind, kernel level, flag, cipher, u32 length
 * in host order) followed by `length` payload bytes.  Levels are already
 * translated to the kernel's numbering (APP 0, INITIAL 1, HANDSHAKE 2, EARLY 3).
 */
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#define QD_KIND_DATA 1
#define QD_KIND_SECRET 2
#define QD_KIND_PEER_TP 3
#define QD_KIND_ALERT 4
#define QD_KIND_ALPN 5
#define QD_KIND_VERIFY 6

#define QD_TP_MAX 512
#define QD_EXT_QUIC_TP 0x39

struct qd_journal {
	unsigned char *buf;
	size_t len;
	size_t cap;
	unsigned char local_tp[QD_TP_MAX];
	size_t local_tp_len;
	void *handle;
	int failed_alloc;
	int psk_unknown;
	int psk_error;
	int peer_tp_seen;
	int is_server;
};

/* Python-side PSK lookup: fills `key` (via qd_datum_set) or returns -1. */
static int qd_py_psk_lookup(void *handle, const unsigned char *identity,
			    size_t identity_len, gnutls_datum_t *key);

/* gnutls level -> kernel level: INITIAL 0->1, EARLY 1->3, HANDSHAKE 2->2, APP 3->0 */
static const unsigned char qd_g2k[4] = { 1, 3, 2, 0 };
/* kernel level -> gnutls level: APP 0->3, INITIAL 1->0, HANDSHAKE 2->2, EARLY 3->1 */
static const unsigned char qd_k2g[4] = { 3, 0, 2, 1 };

static int qd_reserve(struct qd_journal *j, size_t extra)
{
	size_t need = j->len + extra;
	if (need <= j->cap)
		return 0;
	size_t cap = j->cap ? j->cap : 4096;
	while (cap < need)
		cap *= 2;
	unsigned char *grown = realloc(j->buf, cap);
	if (!grown) {
		j->failed_alloc = 1;
		return -1;
	}
	j->buf = grown;
	j->cap = cap;
	return 0;
}

static int qd_append(struct qd_journal *j, unsigned kind, unsigned level,
		     unsigned flag, unsigned cipher, const void *data,
		     size_t size)
{
	if (size > UINT32_MAX || qd_reserve(j, 8 + size) < 0)
		return -1;
	unsigned char *p = j->buf + j->len;
	uint32_t len32 = (uint32_t)size;
	p[0] = (unsigned char)kind;
	p[1] = (unsigned char)level;
	p[2] = (unsigned char)flag;
	p[3] = (unsigned char)cipher;
	memcpy(p + 4, &len32, 4);
	if (size)
		memcpy(p + 8, data, size);
	j->len += 8 + size;
	return 0;
}

static unsigned qd_kernel_cipher(gnutls_cipher_algorithm_t c)
{
	switch (c) {
	case GNUTLS_CIPHER_AES_128_GCM:
		return 51;
	case GNUTLS_CIPHER_AES_256_GCM:
		return 52;
	case GNUTLS_CIPHER_AES_128_CCM:
		return 53;
	case GNUTLS_CIPHER_CHACHA20_POLY1305:
		return 54;
	default:
		return 0;
	}
}

static unsigned qd_session_kernel_cipher(gnutls_session_t s)
{
	return qd_kernel_cipher(gnutls_cipher_get(s));
}

static int qd_on_handshake_bytes(gnutls_session_t s,
				 gnutls_record_encryption_level_t level,
				 gnutls_handshake_description_t htype,
				 const void *data, size_t size)
{
	/* QUIC forbids TLS KeyUpdate; the kernel runs its own key updates. */
	if (htype == GNUTLS_HANDSHAKE_KEY_UPDATE)
		return 0;
	struct qd_journal *j = gnutls_session_get_ptr(s);
	return qd_append(j, QD_KIND_DATA, qd_g2k[level & 3], 0, 0, data, size);
}

static int qd_on_secret(gnutls_session_t s,
			gnutls_record_encryption_level_t level,
			const void *rx, const void *tx, size_t size)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	if (level == GNUTLS_ENCRYPTION_LEVEL_INITIAL)
		return 0;	/* QUIC derives Initial keys itself */
	unsigned cipher = qd_kernel_cipher(level == GNUTLS_ENCRYPTION_LEVEL_EARLY ?
					   gnutls_early_cipher_get(s) :
					   gnutls_cipher_get(s));
	unsigned klevel = qd_g2k[level & 3];
	/* Transmit first: a level's send key must exist before bytes go out at it. */
	if (tx && qd_append(j, QD_KIND_SECRET, klevel, 1, cipher, tx, size) < 0)
		return -1;
	if (rx && qd_append(j, QD_KIND_SECRET, klevel, 0, cipher, rx, size) < 0)
		return -1;
	return 0;
}

static int qd_on_alert(gnutls_session_t s,
		       gnutls_record_encryption_level_t level,
		       gnutls_alert_level_t alert_level,
		       gnutls_alert_description_t desc)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	return qd_append(j, QD_KIND_ALERT, qd_g2k[level & 3], alert_level,
			 desc & 0xff, NULL, 0);
}

static int qd_tp_recv(gnutls_session_t s, const unsigned char *data, size_t size)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	j->peer_tp_seen = 1;
	return qd_append(j, QD_KIND_PEER_TP, 0, 0, 0, data, size);
}

static int qd_tp_send(gnutls_session_t s, gnutls_buffer_t extdata)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	int rc = gnutls_buffer_append_data(extdata, j->local_tp, j->local_tp_len);
	return rc < 0 ? rc : (int)j->local_tp_len;
}

static int qd_alpn_hook(gnutls_session_t s, unsigned htype, unsigned when,
			unsigned incoming, const gnutls_datum_t *msg)
{
	(void)htype; (void)when; (void)incoming; (void)msg;
	struct qd_journal *j = gnutls_session_get_ptr(s);
	gnutls_datum_t proto;
	if (gnutls_alpn_get_selected_protocol(s, &proto) == 0)
		return qd_append(j, QD_KIND_ALPN, 0, 0, 0, proto.data, proto.size);
	return 0;
}

static int qd_psk_server_cb(gnutls_session_t s, const gnutls_datum_t *identity,
			    gnutls_datum_t *key)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	/* -1: no such identity; -2: the lookup itself failed (not the client's fault). */
	int rc = qd_py_psk_lookup(j->handle, identity->data, identity->size, key);
	if (rc == -1)
		j->psk_unknown = 1;
	else if (rc < -1)
		j->psk_error = 1;
	return rc < 0 ? -1 : rc;
}

/*
 * Server: checks a client's chain against the trust store.  GnuTLS runs the
 * verify callback even when a client in REQUEST mode declined to send a
 * certificate, and the one gnutls_session_set_verify_cert() installs then fails
 * the handshake; a client without a certificate is accepted here (in REQUIRE
 * mode GnuTLS has already refused it with certificate_required).  The status of
 * a rejected chain is journaled: gnutls_session_get_verify_cert_status() only
 * knows what GnuTLS's own callback found.
 */
static int qd_verify_client(gnutls_session_t s)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	unsigned int count = 0;
	unsigned int status = 0;
	if (!gnutls_certificate_get_peers(s, &count) || count == 0)
		return 0;
	if (gnutls_certificate_verify_peers2(s, &status) < 0)
		return GNUTLS_E_CERTIFICATE_ERROR;
	if (status) {
		qd_append(j, QD_KIND_VERIFY, 0, 0, 0, &status, sizeof(status));
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	}
	return 0;
}

/* Hooks one session to its journal; returns a GnuTLS error code. */
static int qd_session_attach(gnutls_session_t s, struct qd_journal *j)
{
	gnutls_session_set_ptr(s, j);
	gnutls_handshake_set_read_function(s, qd_on_handshake_bytes);
	gnutls_handshake_set_secret_function(s, qd_on_secret);
	gnutls_alert_set_read_function(s, qd_on_alert);
	/* A server knows the protocol once the ClientHello is parsed, before any
	 * secret exists; a client learns it later and asks at completion. */
	if (j->is_server) {
		gnutls_handshake_set_hook_function(s, GNUTLS_HANDSHAKE_CLIENT_HELLO,
						   GNUTLS_HOOK_POST, qd_alpn_hook);
		gnutls_session_set_verify_function(s, qd_verify_client);
	}
	return gnutls_session_ext_register(s, "QUIC Transport Parameters",
		QD_EXT_QUIC_TP, GNUTLS_EXT_TLS, qd_tp_recv, qd_tp_send,
		NULL, NULL, NULL,
		GNUTLS_EXT_FLAG_TLS | GNUTLS_EXT_FLAG_CLIENT_HELLO |
		GNUTLS_EXT_FLAG_EE);
}

/* Feeds bytes received at a kernel level (none when size is 0) and advances. */
static int qd_step(gnutls_session_t s, int klevel, const unsigned char *data,
		   size_t size)
{
	if (size) {
		int rc = gnutls_handshake_write(s, qd_k2g[klevel & 3], data, size);
		if (rc < 0)
			return rc;
	}
	return gnutls_handshake(s);
}

/* Post-handshake input (a NewSessionTicket): written, never handshaken. */
static int qd_post_handshake(gnutls_session_t s, int klevel,
			     const unsigned char *data, size_t size)
{
	return gnutls_handshake_write(s, qd_k2g[klevel & 3], data, size);
}

static void qd_journal_release(struct qd_journal *j)
{
	free(j->buf);
	j->buf = NULL;
	j->len = j->cap = 0;
}

/* Hands GnuTLS a copy it owns (it frees PSK keys with gnutls_free). */
static int qd_datum_set(gnutls_datum_t *d, const unsigned char *data, size_t size)
{
	d->data = gnutls_malloc(size ? size : 1);
	if (!d->data)
		return -1;
	memcpy(d->data, data, size);
	d->size = (unsigned)size;
	return 0;
}

static void qd_free(void *p)
{
	gnutls_free(p);
}

static void qd_set_psk_server_callback(gnutls_psk_server_credentials_t cred)
{
	gnutls_psk_set_server_credentials_function2(cred, qd_psk_server_cb);
}
