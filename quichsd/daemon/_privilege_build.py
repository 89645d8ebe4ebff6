# SPDX-License-Identifier: GPL-2.0-only
"""cffi builder for ``quichsd.daemon._privilege``: what a worker needs to give up its
privilege (daemon/privilege.py), compiled at install time against libseccomp.

A module of its own so the GnuTLS binding does not link libseccomp; only the calls
used are declared.
"""

from cffi import FFI

CDEF = r"""
typedef void *scmp_filter_ctx;
typedef uint64_t scmp_datum_t;
enum scmp_compare { SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ, ... };
struct scmp_arg_cmp {
    unsigned int arg;
    enum scmp_compare op;
    scmp_datum_t datum_a;
    scmp_datum_t datum_b;
};
#define SCMP_ACT_KILL_PROCESS ...
#define SCMP_ACT_ALLOW ...
#define CLONE_THREAD ...

scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall, unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);
int seccomp_load(scmp_filter_ctx ctx);

uint32_t qd_act_errno(uint32_t code);
int qd_drop_bounding(uint64_t keep);
int qd_clear_ambient(void);
int qd_capset_only(uint64_t keep);
int qd_has_effective(int cap);
int qd_set_no_new_privs(void);
int qd_set_undumpable(void);
"""

# Each returns 0 or -errno: the caller names the step that failed.
SOURCE = r"""
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <seccomp.h>

uint32_t qd_act_errno(uint32_t code) { return SCMP_ACT_ERRNO(code); }

/* Every capability not in keep from the bounding set, up to the last one this kernel
 * knows (PR_CAPBSET_READ fails past it): needs CAP_SETPCAP, so before capset. */
int qd_drop_bounding(uint64_t keep)
{
    for (int cap = 0; cap < 64 && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
        if (!((keep >> cap) & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
            return -errno;
    return 0;
}

int qd_clear_ambient(void)
{
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        return -errno;
    return 0;
}

/* Permitted and effective: those of keep this process holds; inheritable: none. */
int qd_capset_only(uint64_t keep)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0)
        return -errno;
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        data[i].permitted &= (uint32_t)(keep >> (32 * i));
        data[i].effective = data[i].permitted;
        data[i].inheritable = 0;
    }
    return syscall(SYS_capset, &header, data) == 0 ? 0 : -errno;
}

int qd_has_effective(int cap)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0)
        return -errno;
    return (data[cap / 32].effective >> (cap % 32)) & 1;
}

int qd_set_no_new_privs(void)
{ return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno; }

/* No core file (it would hold handshake secrets) and no ptrace by same-uid processes. */
int qd_set_undumpable(void)
{ return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : -errno; }
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "quichsd.daemon._privilege", SOURCE, libraries=["seccomp"], extra_compile_args=["-O2"]
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
