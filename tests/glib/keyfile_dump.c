/* SPDX-License-Identifier: GPL-2.0-only */
/* GLib's own reading of key files, for tests/test_keyfile_glib.py.
 *
 * stdin: records "<length>\n<length bytes>".  For each record, stdout gets
 * "case" and then either "error <GKeyFileError code>" (the file does not load)
 * or, per group and key in GLib's order, what the getters tlshd uses return:
 *   group <name>            key <name>            value <raw value>
 *   string <text> | string error <code>
 *   list <n> <item>... | list error <code>
 * Strings are hex ("-" when empty).  Loaded with tlshd's flag plus
 * G_KEY_FILE_KEEP_TRANSLATIONS, so the locale does not decide which keys show.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put(const char *s)
{
	putchar(' ');
	if (*s == '\0')
		putchar('-');
	for (; *s; s++)
		printf("%02x", (unsigned char)*s);
}

static void dump(const char *data, gsize length)
{
	GKeyFile *kf = g_key_file_new();
	GError *err = NULL;
	gchar **groups;

	puts("case");
	if (!g_key_file_load_from_data(kf, data, length,
				       G_KEY_FILE_KEEP_COMMENTS | G_KEY_FILE_KEEP_TRANSLATIONS, &err)) {
		printf("error %d\n", err->code);
		g_error_free(err);
		g_key_file_free(kf);
		return;
	}
	groups = g_key_file_get_groups(kf, NULL);
	for (gchar **g = groups; *g; g++) {
		gchar **keys = g_key_file_get_keys(kf, *g, NULL, NULL);

		printf("group");
		put(*g);
		putchar('\n');
		for (gchar **k = keys; *k; k++) {
			gchar *value = g_key_file_get_value(kf, *g, *k, NULL);
			gchar *string;
			gchar **list;
			gsize n;

			printf("key");
			put(*k);
			printf("\nvalue");
			put(value);
			putchar('\n');
			g_free(value);
			/* A bad escape sets the error yet returns a string: the error decides. */
			string = g_key_file_get_string(kf, *g, *k, &err);
			if (err) {
				printf("string error %d\n", err->code);
				g_clear_error(&err);
			} else {
				printf("string");
				put(string);
				putchar('\n');
			}
			g_free(string);
			list = g_key_file_get_string_list(kf, *g, *k, &n, &err);
			if (err) {
				printf("list error %d\n", err->code);
				g_clear_error(&err);
			} else {
				printf("list %zu", n);
				for (gsize i = 0; i < n; i++)
					put(list[i]);
				putchar('\n');
			}
			g_strfreev(list);
		}
		g_strfreev(keys);
	}
	g_strfreev(groups);
	g_key_file_free(kf);
}

int main(void)
{
	unsigned long length;

	while (scanf("%lu", &length) == 1 && getchar() == '\n') {
		char *data = malloc(length + 1);

		if (!data || fread(data, 1, length, stdin) != length)
			return 1;
		dump(data, length);
		free(data);
	}
	return 0;
}
