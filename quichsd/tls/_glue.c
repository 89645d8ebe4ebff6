/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * C side of the quichsd GnuTLS binding.
 *
 * GnuTLS reports a QUIC handshake through callbacks (outgoing handshake bytes,
 * traffic secrets, transport parameters, alerts).  Calling into Python for each
 * of them costs far more than the work they do, so these callbacks only append
 * a record to a per-session journal; Python drains the journal once per step.
 * For the same reason a session is set up in one call (qd_open), and the step
 * that completes the handshake also gathers what HandshakeComplete reports:
 * each Python step after a GnuTLS step runs with cold caches, so fewer and
 * shorter steps are what make the engine cheap.
 *
 * Journal record: 8-byte header (kind, kernel level, flag, cipher, u32 length
 * in host order) followed by `length` payload bytes.  Levels are already
 * translated to the kernel's numbering (APP 0, INITIAL 1, HANDSHAKE 2, EARLY 3).
 * Handshake bytes at one level extend the previous record when it holds bytes
 * at that level (one send instead of several).  A secret record carries what
 * GnuTLS gave for one level: flag bit 1 transmit, bit 2 receive; with both,
 * the payload is the transmit secret then the receive secret, of equal length.
 * Alerts and a rejected client chain's status are journal fields, not records.
 */
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>
#include <gnutls/gnutls.h>
#include <gnutls/abstract.h>
#include <gnutls/x509.h>

#define QD_KIND_DATA 1
#define QD_KIND_SECRET 2
#define QD_KIND_PEER_TP 3
#define QD_KIND_ALPN 5

#define QD_SECRET_TX 1
#define QD_SECRET_RX 2

#define QD_TP_MAX 512
#define QD_EXT_QUIC_TP 0x39
#define QD_TICKET_KEY_SIZE 64

/* qd_step(): the handshake completed without the peer's transport parameters. */
#define QD_NO_TRANSPORT_PARAMETERS 1
/* qd_step(): bytes at a level that does not exist, or a message at the wrong level
 * (RFC 9001 §4.1.3-4.1.4); bad_level and bad_type say which.  Nothing was fed. */
#define QD_UNEXPECTED_MESSAGE 2

/* qd_open() steps, for the error Python raises when one fails. */
#define QD_STEP_INIT 1
#define QD_STEP_HOOKS 2
#define QD_STEP_PRIORITY 3
#define QD_STEP_CREDENTIALS 4
#define QD_STEP_TICKETS 5
#define QD_STEP_EARLY_DATA 6
#define QD_STEP_SNI 7
#define QD_STEP_RESUMPTION 8
#define QD_STEP_ALPN 9
#define QD_STEP_MEMORY 10
#define QD_STEP_TRANSPORT_PARAMETERS 11

/* What one EngineConfig asks of every session: filled once, by Python. */
struct qd_plan {
	unsigned flags;				/* gnutls_init() */
	gnutls_priority_t priority;
	int cred_type;
	void *creds;
	void *psk_handle;			/* server PSK lookup, or NULL */
	const char *name;			/* client: SNI and the name to verify, or NULL */
	int verify;				/* client: check the server's chain */
	int resume;				/* client: load session data when given */
	int cert_request;			/* server: gnutls_certificate_request_t, or -1 */
	const unsigned char *ticket_key;	/* server: QD_TICKET_KEY_SIZE bytes, or NULL */
	int early_data;				/* server: accept 0-RTT */
	gnutls_anti_replay_t anti_replay;	/* or NULL */
	const gnutls_datum_t *alpn;
	unsigned alpn_count;
};

struct qd_journal {
	unsigned char *buf;
	size_t len;
	size_t cap;
	size_t last;			/* offset of the last record while len > 0 */
	gnutls_session_t session;	/* NULL once ended */
	size_t local_tp_len;
	void *handle;
	int alpn_check;			/* server with ALPN: Python checks every step */
	int failed_alloc;
	int psk_unknown;
	int psk_error;
	int peer_tp_seen;
	int is_server;
	int sent_alert;			/* alert GnuTLS asked us to send, -1 if none */
	int verify_failed;
	unsigned verify_status;		/* of a client chain qd_verify_client rejected */
	int early_tx;			/* client: the 0-RTT transmit secret was journaled */
	int hrr;			/* client: the server answered with a HelloRetryRequest */
	int bad_level;			/* QD_UNEXPECTED_MESSAGE: the level, and the message */
	int bad_type;			/* type (-1 when the level itself does not exist) */
	/* Per kernel level: where the peer's message stream is (header bytes, body left). */
	struct qd_cursor {
		unsigned char hdr[4];
		unsigned hdr_len;
		uint32_t left;
	} msgs[4];
	int setup_rc;			/* qd_open(): GnuTLS error of the step that failed */
	int setup_step;
	/* set by the qd_step() that completes the handshake */
	unsigned cipher;
	int resumed;
	int early_data_accepted;
	unsigned peer_count;
	const gnutls_datum_t *peers;	/* owned by the session */
	unsigned char local_tp[QD_TP_MAX];
	/* GnuTLS keeps pointers to these without copying */
	char *host;
	unsigned char ticket_key[QD_TICKET_KEY_SIZE];
	gnutls_datum_t ticket_key_datum;
};

/* Python-side PSK lookup: fills `key` (via qd_datum_set) or returns -1. */
static int qd_py_psk_lookup(void *handle, const unsigned char *identity,
			    size_t identity_len, gnutls_datum_t *key);

/* gnutls level -> kernel level: INITIAL 0->1, EARLY 1->3, HANDSHAKE 2->2, APP 3->0 */
static const unsigned char qd_g2k[4] = { 1, 3, 2, 0 };
/* kernel level -> gnutls level: APP 0->3, INITIAL 1->0, HANDSHAKE 2->2, EARLY 3->1 */
static const unsigned char qd_k2g[4] = { 3, 0, 2, 1 };
/* ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest"), RFC 8446 §4.1.3 */
static const unsigned char qd_hrr_random[32] = {
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
};

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

/* Appends a record (two payload parts, the second may be empty). */
static int qd_append2(struct qd_journal *j, unsigned kind, unsigned level,
		      unsigned flag, unsigned cipher, const void *data,
		      size_t size, const void *more, size_t more_size)
{
	size_t total = size + more_size;
	if (total > UINT32_MAX || qd_reserve(j, 8 + total) < 0)
		return -1;
	unsigned char *p = j->buf + j->len;
	uint32_t len32 = (uint32_t)total;
	p[0] = (unsigned char)kind;
	p[1] = (unsigned char)level;
	p[2] = (unsigned char)flag;
	p[3] = (unsigned char)cipher;
	memcpy(p + 4, &len32, 4);
	if (size)
		memcpy(p + 8, data, size);
	if (more_size)
		memcpy(p + 8 + size, more, more_size);
	j->last = j->len;
	j->len += 8 + total;
	return 0;
}

static int qd_append(struct qd_journal *j, unsigned kind, unsigned level,
		     unsigned flag, unsigned cipher, const void *data,
		     size_t size)
{
	return qd_append2(j, kind, level, flag, cipher, data, size, NULL, 0);
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

static int qd_on_handshake_bytes(gnutls_session_t s,
				 gnutls_record_encryption_level_t level,
				 gnutls_handshake_description_t htype,
				 const void *data, size_t size)
{
	/* QUIC forbids TLS KeyUpdate; the kernel runs its own key updates. */
	if (htype == GNUTLS_HANDSHAKE_KEY_UPDATE)
		return 0;
	struct qd_journal *j = gnutls_session_get_ptr(s);
	unsigned klevel = qd_g2k[level & 3];
	if (j->len && j->buf[j->last] == QD_KIND_DATA && j->buf[j->last + 1] == klevel) {
		/* One run of messages at a level is one record: one send, not several. */
		uint32_t run;
		memcpy(&run, j->buf + j->last + 4, 4);
		if ((uint64_t)run + size > UINT32_MAX || qd_reserve(j, size) < 0)
			return -1;
		run += (uint32_t)size;
		memcpy(j->buf + j->last + 4, &run, 4);
		memcpy(j->buf + j->len, data, size);
		j->len += size;
		return 0;
	}
	return qd_append(j, QD_KIND_DATA, klevel, 0, 0, data, size);
}

static int qd_on_secret(gnutls_session_t s,
			gnutls_record_encryption_level_t level,
			const void *rx, const void *tx, size_t size)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	if (level == GNUTLS_ENCRYPTION_LEVEL_INITIAL || (!rx && !tx))
		return 0;	/* QUIC derives Initial keys itself */
	unsigned cipher = qd_kernel_cipher(level == GNUTLS_ENCRYPTION_LEVEL_EARLY ?
					   gnutls_early_cipher_get(s) :
					   gnutls_cipher_get(s));
	if (level == GNUTLS_ENCRYPTION_LEVEL_EARLY && tx) {
		/* GnuTLS offers early data again in the ClientHello that answers a
		 * HelloRetryRequest (RFC 8446 §4.2.10 says not to) and derives a second
		 * 0-RTT key; a level's key is installed once, and a server that asked
		 * for a retry reads no 0-RTT data anyway. */
		if (j->early_tx)
			return 0;
		j->early_tx = 1;
	}
	unsigned flag = (tx ? QD_SECRET_TX : 0) | (rx ? QD_SECRET_RX : 0);
	/* Transmit first: a level's send key must exist before bytes go out at it. */
	return qd_append2(j, QD_KIND_SECRET, qd_g2k[level & 3], flag, cipher,
			  tx ? tx : rx, size, tx ? rx : NULL, tx && rx ? size : 0);
}

static int qd_on_alert(gnutls_session_t s,
		       gnutls_record_encryption_level_t level,
		       gnutls_alert_level_t alert_level,
		       gnutls_alert_description_t desc)
{
	(void)level; (void)alert_level;
	struct qd_journal *j = gnutls_session_get_ptr(s);
	j->sent_alert = (int)(desc & 0xff);
	return 0;
}

static int qd_tp_recv(gnutls_session_t s, const unsigned char *data, size_t size)
{
	struct qd_journal *j = gnutls_session_get_ptr(s);
	/* After a HelloRetryRequest the second ClientHello repeats the extension
	 * (RFC 8446 §4.1.2): the kernel is given it once. */
	if (j->peer_tp_seen)
		return 0;
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
		j->verify_failed = 1;
		j->verify_status = status;
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	}
	return 0;
}

/*
 * Key logging.  gnutls_init() gives every session GnuTLS's own key-log
 * function, which appends each secret to the file named by SSLKEYLOGFILE.
 * Every session quichsd opens (QUIC and TCP) gets this one instead: it writes
 * only to the fd a user named explicitly (quichsd handshake --keylog), in the
 * NSS key log format, and drops everything otherwise.
 */
static int qd_keylog_fd = -1;

static void qd_keylog_to(int fd)
{
	qd_keylog_fd = fd;
}

static void qd_hex(char *out, const unsigned char *data, size_t size)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < size; i++) {
		out[2 * i] = digits[data[i] >> 4];
		out[2 * i + 1] = digits[data[i] & 15];
	}
}

static int qd_keylog(gnutls_session_t s, const char *label, const gnutls_datum_t *secret)
{
	gnutls_datum_t client_random, server_random;
	char line[64 + 1 + 64 + 1 + 2 * 64 + 2];
	size_t n = strlen(label);
	if (qd_keylog_fd < 0)
		return 0;
	gnutls_session_get_random(s, &client_random, &server_random);
	if (n > 64 || client_random.size != 32 || secret->size > 64)
		return 0;
	memcpy(line, label, n);
	line[n++] = ' ';
	qd_hex(line + n, client_random.data, 32);
	n += 64;
	line[n++] = ' ';
	qd_hex(line + n, secret->data, secret->size);
	n += 2 * secret->size;
	line[n++] = '\n';
	/* One write per line on an O_APPEND fd keeps lines whole; a failed write
	 * loses a debugging line, never the handshake. */
	ssize_t written = write(qd_keylog_fd, line, n);
	(void)written;
	return 0;
}

/* Hooks one session to its journal; returns a GnuTLS error code. */
static int qd_session_attach(gnutls_session_t s, struct qd_journal *j)
{
	gnutls_session_set_ptr(s, j);
	gnutls_session_set_keylog_function(s, qd_keylog);
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

static int qd_open_steps(struct qd_journal *j, const struct qd_plan *p,
			 const unsigned char *session_data, size_t session_data_size)
{
	int rc;
	j->setup_step = QD_STEP_INIT;
	if ((rc = gnutls_init(&j->session, p->flags)) < 0) {
		j->session = NULL;
		return rc;
	}
	gnutls_session_t s = j->session;
	j->setup_step = QD_STEP_HOOKS;
	if ((rc = qd_session_attach(s, j)) < 0)
		return rc;
	j->setup_step = QD_STEP_PRIORITY;
	if ((rc = gnutls_priority_set(s, p->priority)) < 0)
		return rc;
	j->setup_step = QD_STEP_CREDENTIALS;
	if ((rc = gnutls_credentials_set(s, p->cred_type, p->creds)) < 0)
		return rc;
	if (p->cert_request >= 0)
		gnutls_certificate_server_set_request(s, p->cert_request);
	if (p->ticket_key) {
		j->setup_step = QD_STEP_TICKETS;
		memcpy(j->ticket_key, p->ticket_key, QD_TICKET_KEY_SIZE);
		j->ticket_key_datum.data = j->ticket_key;
		j->ticket_key_datum.size = QD_TICKET_KEY_SIZE;
		if ((rc = gnutls_session_ticket_enable_server(s, &j->ticket_key_datum)) < 0)
			return rc;
	}
	if (p->early_data) {
		/* RFC 9001 §4.6.1: QUIC servers advertise 0xffffffff or nothing. */
		j->setup_step = QD_STEP_EARLY_DATA;
		if ((rc = gnutls_record_set_max_early_data_size(s, 0xFFFFFFFF)) < 0)
			return rc;
		if (p->anti_replay)
			gnutls_anti_replay_enable(s, p->anti_replay);
	}
	if (p->name) {
		j->setup_step = QD_STEP_SNI;
		size_t n = strlen(p->name);
		if (!(j->host = malloc(n + 1)))
			return GNUTLS_E_MEMORY_ERROR;
		memcpy(j->host, p->name, n + 1);
		if ((rc = gnutls_server_name_set(s, GNUTLS_NAME_DNS, j->host, n)) < 0)
			return rc;
	}
	if (p->verify)	/* GnuTLS keeps the host pointer: it lives in the journal */
		gnutls_session_set_verify_cert(s, j->host, 0);
	if (p->resume && session_data_size) {
		j->setup_step = QD_STEP_RESUMPTION;
		if ((rc = gnutls_session_set_data(s, session_data, session_data_size)) < 0)
			return rc;
	}
	if (p->alpn_count) {
		j->setup_step = QD_STEP_ALPN;
		if ((rc = gnutls_alpn_set_protocols(s, p->alpn, p->alpn_count,
						    GNUTLS_ALPN_MANDATORY)) < 0)
			return rc;
	}
	j->setup_step = 0;
	return 0;
}

/* What qd_open() returns when it cannot allocate a journal. */
static struct qd_journal qd_no_journal = {
	.setup_rc = GNUTLS_E_MEMORY_ERROR, .setup_step = QD_STEP_MEMORY, .sent_alert = -1,
};

/*
 * A session set up as `p` asks, with its journal.  On failure setup_rc and
 * setup_step say what went wrong; the caller frees the journal (and session)
 * with qd_close() either way, so Python checks one field, not a pointer too.
 */
static struct qd_journal *qd_open(const struct qd_plan *p, const unsigned char *tp,
				  size_t tp_len, const unsigned char *session_data,
				  size_t session_data_size)
{
	struct qd_journal *j = calloc(1, sizeof *j);
	if (!j)
		return &qd_no_journal;
	j->is_server = (p->flags & GNUTLS_SERVER) != 0;
	j->alpn_check = j->is_server && p->alpn_count;
	j->handle = p->psk_handle;
	j->sent_alert = -1;
	if (tp_len == 0 || tp_len > QD_TP_MAX) {
		j->setup_rc = GNUTLS_E_INVALID_REQUEST;
		j->setup_step = QD_STEP_TRANSPORT_PARAMETERS;
		return j;
	}
	memcpy(j->local_tp, tp, tp_len);
	j->local_tp_len = tp_len;
	j->setup_rc = qd_open_steps(j, p, session_data, session_data_size);
	return j;
}

/* What HandshakeComplete reports, gathered while the caches still hold it. */
static int qd_completed(struct qd_journal *j)
{
	gnutls_session_t s = j->session;
	if (!j->peer_tp_seen)
		return QD_NO_TRANSPORT_PARAMETERS;
	j->cipher = qd_kernel_cipher(gnutls_cipher_get(s));
	j->resumed = gnutls_session_is_resumed(s) != 0;
	j->early_data_accepted = (gnutls_session_get_flags(s) & GNUTLS_SFLAGS_EARLY_DATA) != 0;
	j->peer_count = 0;
	j->peers = gnutls_certificate_get_peers(s, &j->peer_count);
	if (!j->peers)
		j->peer_count = 0;
	return 0;
}

/* Frees the session now; the journal stays readable until qd_close(). */
static void qd_end(struct qd_journal *j)
{
	if (j->session) {
		gnutls_deinit(j->session);
		j->session = NULL;
	}
	j->peers = NULL;
	j->peer_count = 0;
}

static void qd_close(struct qd_journal *j)
{
	if (j == &qd_no_journal)
		return;
	qd_end(j);
	free(j->host);
	free(j->buf);
	free(j);
}

/* Whether the peer may send handshake message `type` at kernel level `klevel`
 * (RFC 8446 §4 and RFC 9001 §4.1.4: which message belongs to which level). */
static int qd_message_allowed(int is_server, int klevel, unsigned type)
{
	switch (klevel) {
	case 1:	/* INITIAL: the hellos (a HelloRetryRequest is a ServerHello) */
		return type == (is_server ? GNUTLS_HANDSHAKE_CLIENT_HELLO :
				GNUTLS_HANDSHAKE_SERVER_HELLO);
	case 2:	/* HANDSHAKE */
		if (type == GNUTLS_HANDSHAKE_CERTIFICATE_PKT ||
		    type == GNUTLS_HANDSHAKE_CERTIFICATE_VERIFY ||
		    type == GNUTLS_HANDSHAKE_FINISHED || type == 25 /* compressed_certificate */)
			return 1;
		return !is_server && (type == GNUTLS_HANDSHAKE_ENCRYPTED_EXTENSIONS ||
				      type == GNUTLS_HANDSHAKE_CERTIFICATE_REQUEST);
	case 0:	/* APP: only tickets, and only to a client (QUIC has no TLS KeyUpdate) */
		return !is_server && type == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET;
	default: /* EARLY carries no CRYPTO frames */
		return 0;
	}
}

/* Follows the message boundaries of the peer's bytes at a level and checks each
 * message's type before GnuTLS sees any of it: 0, or QD_UNEXPECTED_MESSAGE. */
static int qd_check_messages(struct qd_journal *j, int klevel, const unsigned char *data,
			     size_t size)
{
	if (klevel < 0 || klevel > 3) {
		j->bad_level = klevel;
		j->bad_type = -1;
		return QD_UNEXPECTED_MESSAGE;
	}
	if (klevel == 3 || (klevel == 0 && j->is_server)) {
		j->bad_level = klevel;
		j->bad_type = size ? data[0] : -1;
		return QD_UNEXPECTED_MESSAGE;
	}
	struct qd_cursor *m = &j->msgs[klevel];
	while (size) {
		if (m->left) {
			size_t n = m->left < size ? m->left : size;
			m->left -= (uint32_t)n;
			data += n;
			size -= n;
			continue;
		}
		m->hdr[m->hdr_len++] = *data++;
		size--;
		if (m->hdr_len == 1 && !qd_message_allowed(j->is_server, klevel, m->hdr[0])) {
			j->bad_level = klevel;
			j->bad_type = m->hdr[0];
			return QD_UNEXPECTED_MESSAGE;
		}
		if (m->hdr_len < 4)
			continue;
		m->hdr_len = 0;
		m->left = ((uint32_t)m->hdr[1] << 16) | ((uint32_t)m->hdr[2] << 8) | m->hdr[3];
	}
	return 0;
}

/*
 * Feeds bytes received at a kernel level (none when size is 0) and advances:
 * a GnuTLS code, or QD_NO_TRANSPORT_PARAMETERS for a completion that is not.
 */
static int qd_step(struct qd_journal *j, int klevel, const unsigned char *data,
		   size_t size)
{
	gnutls_session_t s = j->session;
	if (!s)
		return GNUTLS_E_INVALID_SESSION;
	if (size) {
		if (qd_check_messages(j, klevel, data, size))
			return QD_UNEXPECTED_MESSAGE;
		if (!j->is_server && klevel == 1 && size >= 38 && data[0] == 2 &&
		    memcmp(data + 6, qd_hrr_random, 32) == 0)
			j->hrr = 1;
		int rc = gnutls_handshake_write(s, qd_k2g[klevel], data, size);
		if (rc < 0)
			return rc;
	}
	int rc = gnutls_handshake(s);
	return rc == 0 ? qd_completed(j) : rc;
}

/* Post-handshake input (a NewSessionTicket): written, never handshaken. */
static int qd_post_handshake(struct qd_journal *j, int klevel,
			     const unsigned char *data, size_t size)
{
	if (!j->session)
		return GNUTLS_E_INVALID_SESSION;
	if (qd_check_messages(j, klevel, data, size))
		return QD_UNEXPECTED_MESSAGE;
	return gnutls_handshake_write(j->session, qd_k2g[klevel], data, size);
}

/*
 * Our certificate, always presented.  GnuTLS picks a client certificate itself
 * when none of the server's CertificateRequest signature schemes suit it as it
 * sees it: 3.7 skips an RSA key when only RSA-PSS schemes are listed (it can
 * sign those with it) and sends an empty Certificate, and a certificate whose
 * issuer the server does not name is never offered.  tlshd answers with a
 * retrieve callback that returns the configured certificate; so do we, for both
 * roles and both transports: every CertificateCredentials with a key gets it.
 * The server then decides about the certificate, as it should.
 *
 * GnuTLS gives the callback no pointer of ours, only the session, whose
 * credentials lead here through a small registry (one entry per credentials
 * object with a key; a few per process).  The entry owns the parsed chain and
 * key that the callback hands out (retrieve_function2: GnuTLS does not free them).
 */
#include <pthread.h>

struct qd_cert {
	gnutls_certificate_credentials_t cred;
	gnutls_pcert_st *pcerts;
	unsigned count;
	gnutls_privkey_t key;
	struct qd_cert *next;
};

static struct qd_cert *qd_certs;
static pthread_mutex_t qd_certs_lock = PTHREAD_MUTEX_INITIALIZER;

static int qd_cert_retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_rdn, int nreqs,
			    const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
			    gnutls_pcert_st **pcert, unsigned int *pcert_length,
			    gnutls_privkey_t *privkey)
{
	(void)req_ca_rdn; (void)nreqs; (void)pk_algos; (void)pk_algos_length;
	void *cred = NULL;
	*pcert_length = 0;
	*pcert = NULL;
	*privkey = NULL;
	if (gnutls_credentials_get(s, GNUTLS_CRD_CERTIFICATE, &cred) < 0)
		return 0;
	pthread_mutex_lock(&qd_certs_lock);
	for (struct qd_cert *c = qd_certs; c; c = c->next) {
		if (c->cred == cred) {
			*pcert = c->pcerts;
			*pcert_length = c->count;
			*privkey = c->key;
			break;
		}
	}
	pthread_mutex_unlock(&qd_certs_lock);
	return 0;
}

static void qd_cert_release(struct qd_cert *c)
{
	for (unsigned i = 0; i < c->count; i++)
		gnutls_pcert_deinit(&c->pcerts[i]);
	free(c->pcerts);
	if (c->key)
		gnutls_privkey_deinit(c->key);
	free(c);
}

/* Makes `cred` present this chain and key whenever a peer asks: a GnuTLS code. */
static int qd_cert_attach(gnutls_certificate_credentials_t cred, const gnutls_datum_t *chain,
			  int chain_fmt, const gnutls_datum_t *key, int key_fmt)
{
	struct qd_cert *c = calloc(1, sizeof *c);
	if (!c)
		return GNUTLS_E_MEMORY_ERROR;
	c->cred = cred;
	unsigned max = 16;
	int rc;
	for (;;) {
		c->pcerts = calloc(max, sizeof *c->pcerts);
		if (!c->pcerts) {
			rc = GNUTLS_E_MEMORY_ERROR;
			goto fail;
		}
		c->count = max;
		rc = gnutls_pcert_list_import_x509_raw(c->pcerts, &c->count, chain, chain_fmt, 0);
		if (rc != GNUTLS_E_SHORT_MEMORY_BUFFER)
			break;
		free(c->pcerts);
		c->pcerts = NULL;
		max = c->count > max ? c->count : max * 2;
	}
	if (rc < 0) {
		c->count = 0;
		goto fail;
	}
	if ((rc = gnutls_privkey_init(&c->key)) < 0) {
		c->key = NULL;
		goto fail;
	}
	if ((rc = gnutls_privkey_import_x509_raw(c->key, key, key_fmt, NULL, 0)) < 0)
		goto fail;
	pthread_mutex_lock(&qd_certs_lock);
	c->next = qd_certs;
	qd_certs = c;
	pthread_mutex_unlock(&qd_certs_lock);
	gnutls_certificate_set_retrieve_function2(cred, qd_cert_retrieve);
	return 0;
fail:
	qd_cert_release(c);
	return rc;
}

/* Frees certificate credentials and what qd_cert_attach() gave them. */
static void qd_certificate_free(gnutls_certificate_credentials_t cred)
{
	struct qd_cert *found = NULL;
	pthread_mutex_lock(&qd_certs_lock);
	for (struct qd_cert **p = &qd_certs; *p; p = &(*p)->next) {
		if ((*p)->cred == cred) {
			found = *p;
			*p = found->next;
			break;
		}
	}
	pthread_mutex_unlock(&qd_certs_lock);
	gnutls_certificate_free_credentials(cred);
	if (found)
		qd_cert_release(found);
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
 * External PSK binders (RFC 8446 §4.2.11) use the PSK's own hash, but GnuTLS
 * before 3.8.11 computes them with SHA-256 whatever the PSK: a SHA-384 PSK
 * (NVMe identity "NVMe?R02") then only works against peers that do the same,
 * and only over a SHA-256 suite.  3.8.11 added credentials that carry the hash;
 * a server given GNUTLS_MAC_UNKNOWN tries both.  mac 0 keeps the old default.
 */
static int qd_psk_binder_hash_supported(void)
{
#if GNUTLS_VERSION_NUMBER >= 0x03080b
	return 1;
#else
	return 0;
#endif
}

static int qd_psk_allocate_client(gnutls_psk_client_credentials_t *sc, int mac)
{
#if GNUTLS_VERSION_NUMBER >= 0x03080b
	if (mac)
		return gnutls_psk_allocate_client_credentials2(sc, (gnutls_mac_algorithm_t)mac);
#else
	(void)mac;
#endif
	return gnutls_psk_allocate_client_credentials(sc);
}

static int qd_psk_allocate_server(gnutls_psk_server_credentials_t *sc)
{
#if GNUTLS_VERSION_NUMBER >= 0x03080b
	return gnutls_psk_allocate_server_credentials2(sc, GNUTLS_MAC_UNKNOWN);
#else
	return gnutls_psk_allocate_server_credentials(sc);
#endif
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
 * Server (docs/tlshd-compat.md §VERIFY): the client was asked, not required, for a
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
	gnutls_session_set_keylog_function(s, qd_keylog);
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
