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

/*
 * TCP (kTLS path).  GnuTLS runs a whole TLS 1.3 handshake on the socket, which
 * belongs to a kernel consumer: its file status flags are shared with that
 * consumer, so instead of setting O_NONBLOCK these transport functions pass
 * MSG_DONTWAIT on every call and the asyncio side waits per
 * gnutls_record_get_direction().  The session ptr is a struct qd_tcp.
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define QD_EXT_RECORD_SIZE_LIMIT 28
#define QD_TCP_VERIFY_NONE 0
#define QD_TCP_VERIFY_CLIENT 1	/* server: a certificate the client presents must verify */
#define QD_TCP_VERIFY_SERVER 2	/* client: the server's chain and name must verify */

struct qd_tcp {
	gnutls_session_t session;
	void *handle;			/* PSK lookup (server) */
	int fd;
	int is_server;
	int verify_mode;		/* QD_TCP_VERIFY_* */
	const char *verify_host;	/* client: name the server's certificate must carry, or NULL */
	int verify_failed;
	unsigned verify_status;		/* gnutls_certificate_status_t bits of a rejected client */
	int verify_rc;			/* GnuTLS error when the chain could not be checked at all */
	int psk_unknown;
	int psk_error;
	int sent_alert;			/* alert we sent from a callback, -1 if none */
	int alert_rc;			/* gnutls_alert_send() result for it */
	unsigned peer_record_limit;	/* RFC 8449 record_size_limit the peer sent, 0 if none */
	int last_errno;
};

static int qd_tcp_set_errno(struct qd_tcp *t)
{
	int e = errno;
	if (e == EWOULDBLOCK)
		e = EAGAIN;
	t->last_errno = e;
	gnutls_transport_set_errno(t->session, e);
	return e;
}

static ssize_t qd_tcp_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct qd_tcp *t = ptr;
	struct msghdr msg;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = (struct iovec *)iov;
	msg.msg_iovlen = (size_t)iovcnt;
	ssize_t n = sendmsg(t->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0)
		qd_tcp_set_errno(t);
	return n;
}

static ssize_t qd_tcp_pull(gnutls_transport_ptr_t ptr, void *buf, size_t size)
{
	struct qd_tcp *t = ptr;
	ssize_t n = recv(t->fd, buf, size, MSG_DONTWAIT);
	if (n < 0)
		qd_tcp_set_errno(t);
	return n;
}

/* Never wait here: claim data is ready and let the pull report EAGAIN. */
static int qd_tcp_pull_timeout(gnutls_transport_ptr_t ptr, unsigned int ms)
{
	(void)ptr; (void)ms;
	return 1;
}

static void qd_tcp_alert(struct qd_tcp *t, gnutls_alert_description_t desc)
{
	/* Only possible from inside a callback: once gnutls_handshake() has failed
	 * the session refuses to write.  Best effort on a non-blocking socket. */
	if (t->sent_alert >= 0)
		return;
	t->sent_alert = (int)desc;
	t->alert_rc = gnutls_alert_send(t->session, GNUTLS_AL_FATAL, desc);
}

static int qd_tcp_rsl(void *ctx, unsigned tls_id, const unsigned char *data, unsigned size)
{
	struct qd_tcp *t = ctx;
	if (tls_id == QD_EXT_RECORD_SIZE_LIMIT && size == 2)
		t->peer_record_limit = ((unsigned)data[0] << 8) | data[1];
	return 0;
}

/* Remembers the peer's record_size_limit: the client's from its (last)
 * ClientHello, the server's from EncryptedExtensions.  GnuTLS < 3.8.11 has no
 * getter for the resulting send limit. */
static int qd_tcp_hook(gnutls_session_t s, unsigned htype, unsigned when,
		       unsigned incoming, const gnutls_datum_t *msg)
{
	(void)when;
	struct qd_tcp *t = gnutls_session_get_ptr(s);
	if (!incoming || !msg || !msg->data)
		return 0;
	if (t->is_server && htype == GNUTLS_HANDSHAKE_CLIENT_HELLO) {
		t->peer_record_limit = 0;
		gnutls_ext_raw_parse(t, qd_tcp_rsl, msg, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO);
	} else if (!t->is_server && htype == GNUTLS_HANDSHAKE_ENCRYPTED_EXTENSIONS) {
		gnutls_ext_raw_parse(t, qd_tcp_rsl, msg, 0);
	}
	return 0;
}

/* The alert a client closes with when the server's certificate fails (RFC 8446 §6.2). */
static gnutls_alert_description_t qd_tcp_cert_alert(unsigned status)
{
	if (status & GNUTLS_CERT_REVOKED)
		return GNUTLS_A_CERTIFICATE_REVOKED;
	if (status & (GNUTLS_CERT_EXPIRED | GNUTLS_CERT_NOT_ACTIVATED))
		return GNUTLS_A_CERTIFICATE_EXPIRED;
	if (status & GNUTLS_CERT_SIGNER_NOT_FOUND)
		return GNUTLS_A_UNKNOWN_CA;
	return GNUTLS_A_BAD_CERTIFICATE;
}

/*
 * Verification with an alert the peer can read: once gnutls_handshake() has
 * failed the session refuses to write, so the alert goes out from here.
 * Server (tlshd-behaviour §8): the client was asked, not required, for a
 * certificate; none is fine, a presented one must verify, else access_denied.
 * Client: the server must present a chain that verifies for verify_host.
 */
static int qd_tcp_verify(gnutls_session_t s)
{
	struct qd_tcp *t = gnutls_session_get_ptr(s);
	unsigned int count = 0;
	unsigned int status = 0;
	if (t->verify_mode == QD_TCP_VERIFY_NONE)
		return 0;
	const gnutls_datum_t *chain = gnutls_certificate_get_peers(s, &count);
	if (!chain || count == 0) {
		if (t->verify_mode == QD_TCP_VERIFY_CLIENT)
			return 0;
		t->verify_failed = 1;
		t->verify_rc = GNUTLS_E_NO_CERTIFICATE_FOUND;
		qd_tcp_alert(t, GNUTLS_A_BAD_CERTIFICATE);
		return GNUTLS_E_NO_CERTIFICATE_FOUND;
	}
	const char *host = t->verify_mode == QD_TCP_VERIFY_SERVER ? t->verify_host : NULL;
	int rc = gnutls_certificate_verify_peers3(s, host, &status);
	if (rc < 0 || status) {
		t->verify_failed = 1;
		t->verify_status = status;
		t->verify_rc = rc < 0 ? rc : 0;
		qd_tcp_alert(t, t->verify_mode == QD_TCP_VERIFY_CLIENT ?
			     GNUTLS_A_ACCESS_DENIED : qd_tcp_cert_alert(status));
		return rc < 0 ? GNUTLS_E_CERTIFICATE_ERROR : GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	}
	return 0;
}

static int qd_tcp_psk_server_cb(gnutls_session_t s, const gnutls_datum_t *identity,
				gnutls_datum_t *key)
{
	struct qd_tcp *t = gnutls_session_get_ptr(s);
	/* -1: no such identity; -2: the lookup itself failed (not the client's fault). */
	int rc = qd_py_psk_lookup(t->handle, identity->data, identity->size, key);
	if (rc == -1) {
		t->psk_unknown = 1;
		qd_tcp_alert(t, GNUTLS_A_UNKNOWN_PSK_IDENTITY);
	} else if (rc < -1) {
		t->psk_error = 1;
		qd_tcp_alert(t, GNUTLS_A_INTERNAL_ERROR);
	}
	return rc < 0 ? -1 : rc;
}

static void qd_tcp_set_psk_server_callback(gnutls_psk_server_credentials_t cred)
{
	gnutls_psk_set_server_credentials_function2(cred, qd_tcp_psk_server_cb);
}

/* Hooks a TCP session to its state and socket. */
static void qd_tcp_attach(gnutls_session_t s, struct qd_tcp *t, int fd)
{
	t->session = s;
	t->fd = fd;
	t->sent_alert = -1;
	gnutls_session_set_ptr(s, t);
	gnutls_transport_set_ptr(s, t);
	gnutls_transport_set_vec_push_function(s, qd_tcp_push);
	gnutls_transport_set_pull_function(s, qd_tcp_pull);
	gnutls_transport_set_pull_timeout_function(s, qd_tcp_pull_timeout);
	gnutls_handshake_set_hook_function(s, GNUTLS_HANDSHAKE_ANY, GNUTLS_HOOK_POST, qd_tcp_hook);
	gnutls_session_set_verify_function(s, qd_tcp_verify);
}

/* Copies one direction's record state: 0 or a GnuTLS error.  iv/key hold 32. */
static int qd_tcp_record_state(gnutls_session_t s, unsigned read, unsigned char *iv,
			       unsigned *iv_len, unsigned char *key, unsigned *key_len,
			       unsigned char *seq)
{
	gnutls_datum_t mac, giv, gkey;
	int rc = gnutls_record_get_state(s, read, &mac, &giv, &gkey, seq);
	if (rc < 0)
		return rc;
	if (giv.size > 32 || gkey.size > 32)
		return GNUTLS_E_INTERNAL_ERROR;
	memcpy(iv, giv.data, giv.size);
	memcpy(key, gkey.data, gkey.size);
	*iv_len = giv.size;
	*key_len = gkey.size;
	return 0;
}
