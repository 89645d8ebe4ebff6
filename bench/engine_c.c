/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Baseline for bench/engine.py: the in-memory QUIC TLS handshake that
 * quichsd's HandshakeEngine does, in plain C on the same GnuTLS, with no
 * Python in the loop.
 *
 * Per pair: a client and a server session with the QUIC hooks (handshake
 * bytes collected per encryption level, traffic secrets recorded, alerts
 * recorded, extension 0x39 carrying fixed transport parameters); each run
 * of bytes a side produced at a level is handed to the peer with
 * gnutls_handshake_write() followed by gnutls_handshake(), until both sides
 * complete.  With --tickets the server sends one NewSessionTicket after
 * completion and the client takes it and exports its session data, as the
 * engine does when a ticket key is configured.
 *
 * Priorities, credentials and the ticket key are built once.  Prints one
 * JSON line:
 * {"pairs": N, "seconds": S, "cpu_seconds": C, "pairs_per_second": R,
 *  "pairs_per_cpu_second": RC}.
 *
 * usage: engine_c --chain PEM --key PEM --ca PEM
 *                 [--seconds S | --iterations N] [--warmup N]
 *                 [--tickets] [--tp HEX] [--name HOST] [--serve] [--cpu-clock]
 *
 * With --serve it stays up after the warmup: each line read on stdin is a
 * time budget in seconds, answered with one JSON line; EOF or 0 ends it.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <gnutls/gnutls.h>

/* The priority string of quichsd.tls.binding.priority_for(0). */
static const char PRIORITY[] =
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+PSK:-CIPHER-ALL:"
	"+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM:"
	"%DISABLE_TLS13_COMPAT_MODE";

#define EXT_QUIC_TRANSPORT_PARAMETERS 0x39
#define TP_MAX 512
#define LEVELS 4		/* gnutls_record_encryption_level_t values 0..3 */
#define SECRET_MAX 64
#define MAX_FLIGHTS 16

struct flight {
	unsigned char *data;
	size_t len;
	size_t cap;
};

struct side {
	gnutls_session_t session;
	struct flight out[LEVELS];	/* bytes produced, per GnuTLS level */
	unsigned char secret[LEVELS][2][SECRET_MAX];	/* [level][0 rx, 1 tx] */
	size_t secret_len;
	unsigned secrets_seen;
	unsigned char peer_tp[TP_MAX];
	size_t peer_tp_len;
	int peer_tp_seen;
	int alert;		/* last alert description seen, -1 if none */
	int complete;
};

static unsigned char local_tp[TP_MAX];
static size_t local_tp_len;

static void die(const char *what, int rc)
{
	fprintf(stderr, "engine_c: %s: %s (%d)\n", what, gnutls_strerror(rc), rc);
	exit(1);
}

static void check(int rc, const char *what)
{
	if (rc < 0)
		die(what, rc);
}

static int flight_append(struct flight *f, const void *data, size_t size)
{
	if (f->len + size > f->cap) {
		size_t cap = f->cap ? f->cap : 2048;
		while (cap < f->len + size)
			cap *= 2;
		unsigned char *grown = realloc(f->data, cap);
		if (!grown)
			return GNUTLS_E_MEMORY_ERROR;
		f->data = grown;
		f->cap = cap;
	}
	memcpy(f->data + f->len, data, size);
	f->len += size;
	return 0;
}

/* ---- GnuTLS QUIC hooks ------------------------------------------------- */

static int on_handshake_bytes(gnutls_session_t session,
			      gnutls_record_encryption_level_t level,
			      gnutls_handshake_description_t type,
			      const void *data, size_t size)
{
	struct side *side = gnutls_session_get_ptr(session);
	if (type == GNUTLS_HANDSHAKE_KEY_UPDATE)
		return 0;	/* QUIC has its own key update */
	return flight_append(&side->out[level & 3], data, size);
}

static int on_secret(gnutls_session_t session,
		     gnutls_record_encryption_level_t level,
		     const void *rx, const void *tx, size_t size)
{
	struct side *side = gnutls_session_get_ptr(session);
	if (level == GNUTLS_ENCRYPTION_LEVEL_INITIAL)
		return 0;	/* QUIC derives Initial keys from the DCID */
	if (size > SECRET_MAX)
		return GNUTLS_E_INTERNAL_ERROR;
	side->secret_len = size;
	if (rx) {
		memcpy(side->secret[level][0], rx, size);
		side->secrets_seen++;
	}
	if (tx) {
		memcpy(side->secret[level][1], tx, size);
		side->secrets_seen++;
	}
	return 0;
}

static int on_alert(gnutls_session_t session,
		    gnutls_record_encryption_level_t level,
		    gnutls_alert_level_t alert_level,
		    gnutls_alert_description_t desc)
{
	struct side *side = gnutls_session_get_ptr(session);
	(void)level;
	(void)alert_level;
	side->alert = (int)desc;
	return 0;
}

static int tp_receive(gnutls_session_t session, const unsigned char *data,
		      size_t size)
{
	struct side *side = gnutls_session_get_ptr(session);
	if (size > TP_MAX)
		return GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER;
	memcpy(side->peer_tp, data, size);
	side->peer_tp_len = size;
	side->peer_tp_seen = 1;
	return 0;
}

static int tp_send(gnutls_session_t session, gnutls_buffer_t out)
{
	(void)session;
	int rc = gnutls_buffer_append_data(out, local_tp, local_tp_len);
	return rc < 0 ? rc : (int)local_tp_len;
}

/* ---- one pair ---------------------------------------------------------- */

struct shared {
	gnutls_priority_t priority;
	gnutls_certificate_credentials_t server_creds;
	gnutls_certificate_credentials_t client_creds;
	gnutls_datum_t ticket_key;
	int tickets;
	const char *name;
};

static void side_open(struct side *side, const struct shared *sh, int server)
{
	for (int i = 0; i < LEVELS; i++)
		side->out[i].len = 0;
	side->secrets_seen = 0;
	side->secret_len = 0;
	side->peer_tp_seen = 0;
	side->peer_tp_len = 0;
	side->alert = -1;
	side->complete = 0;

	unsigned flags = server ? GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET
				: GNUTLS_CLIENT;
	check(gnutls_init(&side->session, flags), "gnutls_init");
	gnutls_session_t s = side->session;
	gnutls_session_set_ptr(s, side);
	gnutls_handshake_set_read_function(s, on_handshake_bytes);
	gnutls_handshake_set_secret_function(s, on_secret);
	gnutls_alert_set_read_function(s, on_alert);
	check(gnutls_session_ext_register(s, "QUIC Transport Parameters",
			EXT_QUIC_TRANSPORT_PARAMETERS, GNUTLS_EXT_TLS,
			tp_receive, tp_send, NULL, NULL, NULL,
			GNUTLS_EXT_FLAG_TLS | GNUTLS_EXT_FLAG_CLIENT_HELLO |
			GNUTLS_EXT_FLAG_EE), "registering extension 0x39");
	check(gnutls_priority_set(s, sh->priority), "gnutls_priority_set");
	if (server) {
		check(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE,
					     sh->server_creds), "server credentials");
		gnutls_certificate_server_set_request(s, GNUTLS_CERT_IGNORE);
		if (sh->tickets)
			check(gnutls_session_ticket_enable_server(s, &sh->ticket_key),
			      "enabling tickets");
	} else {
		check(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE,
					     sh->client_creds), "client credentials");
		check(gnutls_server_name_set(s, GNUTLS_NAME_DNS, sh->name,
					     strlen(sh->name)), "setting SNI");
		gnutls_session_set_verify_cert(s, sh->name, 0);
	}
}

static void advance(struct side *side, int rc, const char *who)
{
	if (rc == 0) {
		side->complete = 1;
		return;
	}
	if (rc != GNUTLS_E_AGAIN && rc != GNUTLS_E_INTERRUPTED &&
	    gnutls_error_is_fatal(rc)) {
		fprintf(stderr, "engine_c: %s handshake failed (alert %d)\n",
			who, side->alert);
		die(who, rc);
	}
}

/* Hands every run of bytes `from` produced to `to`, level by level. */
static int deliver(struct side *from, struct side *to, const char *who)
{
	int moved = 0;
	/* Order of appearance in a flight: Initial, Handshake, then 1-RTT. */
	static const gnutls_record_encryption_level_t order[] = {
		GNUTLS_ENCRYPTION_LEVEL_INITIAL, GNUTLS_ENCRYPTION_LEVEL_EARLY,
		GNUTLS_ENCRYPTION_LEVEL_HANDSHAKE, GNUTLS_ENCRYPTION_LEVEL_APPLICATION,
	};
	for (int i = 0; i < LEVELS; i++) {
		gnutls_record_encryption_level_t level = order[i];
		struct flight *f = &from->out[level];
		if (!f->len)
			continue;
		moved = 1;
		int rc = gnutls_handshake_write(to->session, level, f->data, f->len);
		f->len = 0;
		if (to->complete) {
			/* Post-handshake (NewSessionTicket): written, never handshaken. */
			check(rc, "post-handshake write");
			continue;
		}
		if (rc < 0)
			advance(to, rc, who);
		else
			advance(to, gnutls_handshake(to->session), who);
	}
	return moved;
}

static void one_pair(struct side *client, struct side *server,
		     const struct shared *sh, int verify)
{
	side_open(client, sh, 0);
	side_open(server, sh, 1);

	int ticket_sent = 0;
	advance(client, gnutls_handshake(client->session), "client");
	for (int i = 0; i < MAX_FLIGHTS; i++) {
		int moved = deliver(client, server, "server");
		if (server->complete && sh->tickets && !ticket_sent) {
			check(gnutls_session_ticket_send(server->session, 1, 0),
			      "sending a session ticket");
			ticket_sent = 1;
		}
		moved |= deliver(server, client, "client");
		if (!moved)
			break;
	}
	if (!client->complete || !server->complete) {
		fprintf(stderr, "engine_c: handshake did not complete\n");
		exit(1);
	}
	if (!client->peer_tp_seen || !server->peer_tp_seen) {
		fprintf(stderr, "engine_c: transport parameters missing\n");
		exit(1);
	}
	if (sh->tickets) {
		gnutls_datum_t data;
		check(gnutls_session_get_data2(client->session, &data),
		      "exporting the session");
		gnutls_free(data.data);
	}
	if (verify) {
		/* Both directions of Handshake and 1-RTT keys, and they pair up. */
		int ok = client->secrets_seen == 4 && server->secrets_seen == 4 &&
			 client->secret_len == server->secret_len &&
			 client->peer_tp_len == local_tp_len &&
			 !memcmp(client->peer_tp, local_tp, local_tp_len);
		for (int l = 2; ok && l < LEVELS; l++)
			ok = !memcmp(client->secret[l][0], server->secret[l][1],
				     client->secret_len) &&
			     !memcmp(client->secret[l][1], server->secret[l][0],
				     client->secret_len);
		if (!ok) {
			fprintf(stderr, "engine_c: secrets or parameters mismatch\n");
			exit(1);
		}
	}
	gnutls_deinit(server->session);
	gnutls_deinit(client->session);
}

/* ---- driver ------------------------------------------------------------ */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* With --cpu-clock, time budgets count CPU time: other processes sharing the CPU
 * then cost this one nothing. */
static int use_cpu_clock;

/* Times `iterations` pairs, or as many as fit in `seconds`; prints one JSON line. */
static void run(struct side *client, struct side *server,
		const struct shared *sh, long iterations, double seconds)
{
	long pairs = 0;
	double cpu0 = cpu_now(), start = now(), elapsed, cpu;
	if (iterations) {
		for (; pairs < iterations; pairs++)
			one_pair(client, server, sh, 0);
	} else {
		do {
			one_pair(client, server, sh, 0);
			pairs++;
		} while ((use_cpu_clock ? cpu_now() - cpu0 : now() - start) < seconds);
	}
	elapsed = now() - start;
	cpu = cpu_now() - cpu0;
	printf("{\"pairs\": %ld, \"seconds\": %.6f, \"cpu_seconds\": %.6f, "
	       "\"pairs_per_second\": %.3f, \"pairs_per_cpu_second\": %.3f}\n",
	       pairs, elapsed, cpu, (double)pairs / elapsed, (double)pairs / cpu);
	fflush(stdout);
}

static int parse_hex(const char *hex)
{
	size_t n = strlen(hex);
	if (n % 2 || n == 0 || n / 2 > TP_MAX)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		local_tp[i] = (unsigned char)v;
	}
	local_tp_len = n / 2;
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: engine_c --chain PEM --key PEM --ca PEM "
		"[--seconds S | --iterations N] [--warmup N] [--tickets] "
		"[--tp HEX] [--name HOST] [--serve] [--cpu-clock]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *chain = NULL, *key = NULL, *ca = NULL, *tp_hex = NULL;
	double seconds = 1.0;
	long iterations = 0, warmup = 20;
	int serve = 0;
	struct shared sh = { .name = "localhost" };

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--tickets")) {
			sh.tickets = 1;
			continue;
		}
		if (!strcmp(a, "--serve")) {
			serve = 1;
			continue;
		}
		if (!strcmp(a, "--cpu-clock")) {
			use_cpu_clock = 1;
			continue;
		}
		if (!v)
			usage();
		if (!strcmp(a, "--chain"))
			chain = v;
		else if (!strcmp(a, "--key"))
			key = v;
		else if (!strcmp(a, "--ca"))
			ca = v;
		else if (!strcmp(a, "--seconds"))
			seconds = strtod(v, NULL);
		else if (!strcmp(a, "--iterations"))
			iterations = strtol(v, NULL, 10);
		else if (!strcmp(a, "--warmup"))
			warmup = strtol(v, NULL, 10);
		else if (!strcmp(a, "--tp"))
			tp_hex = v;
		else if (!strcmp(a, "--name"))
			sh.name = v;
		else
			usage();
		i++;
	}
	if (!chain || !key || !ca || seconds <= 0 || iterations < 0 || warmup < 0)
		usage();
	if (tp_hex) {
		if (parse_hex(tp_hex) < 0)
			usage();
	} else {
		memset(local_tp, 0x5a, 64);
		local_tp_len = 64;
	}

	check(gnutls_global_init(), "gnutls_global_init");
	const char *err = NULL;
	if (gnutls_priority_init(&sh.priority, PRIORITY, &err) < 0) {
		fprintf(stderr, "engine_c: bad priority at %s\n", err ? err : "?");
		return 1;
	}
	check(gnutls_certificate_allocate_credentials(&sh.server_creds), "credentials");
	check(gnutls_certificate_set_x509_key_file(sh.server_creds, chain, key,
						   GNUTLS_X509_FMT_PEM),
	      "loading the server chain and key");
	check(gnutls_certificate_allocate_credentials(&sh.client_creds), "credentials");
	int anchors = gnutls_certificate_set_x509_trust_file(sh.client_creds, ca,
							     GNUTLS_X509_FMT_PEM);
	check(anchors, "loading the CA");
	if (anchors == 0) {
		fprintf(stderr, "engine_c: %s holds no certificate\n", ca);
		return 1;
	}
	if (sh.tickets)
		check(gnutls_session_ticket_key_generate(&sh.ticket_key), "ticket key");

	static struct side client, server;
	for (long i = 0; i < warmup; i++)
		one_pair(&client, &server, &sh, 1);
	if (!warmup)	/* check the wiring at least once, outside the clock */
		one_pair(&client, &server, &sh, 1);

	if (!serve) {
		run(&client, &server, &sh, iterations, seconds);
	} else {
		/* One budget in seconds per input line, one JSON line per budget. */
		char line[64];
		while (fgets(line, sizeof line, stdin)) {
			double budget = strtod(line, NULL);
			if (budget <= 0)
				break;
			run(&client, &server, &sh, 0, budget);
		}
	}

	for (int i = 0; i < LEVELS; i++) {
		free(client.out[i].data);
		free(server.out[i].data);
	}
	if (sh.tickets)
		gnutls_free(sh.ticket_key.data);
	gnutls_certificate_free_credentials(sh.client_creds);
	gnutls_certificate_free_credentials(sh.server_creds);
	gnutls_priority_deinit(sh.priority);
	gnutls_global_deinit();
	return 0;
}
