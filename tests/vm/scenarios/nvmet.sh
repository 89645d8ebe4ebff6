# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=sh
# Sourced by scenario scripts: an NVMe/TCP target with TLS 1.3 on 127.0.0.1 through nvmet's
# configfs, allowing one host NQN. The nvmet and nvmet-tcp modules must be loaded.
#
# nvmet_target_up PORT SUBNQN HOSTNQN IMAGE   the subsystem with IMAGE as namespace 1 (buffered
#                                             I/O), the host, and a port with addr_tsas=tls1.3;
#                                             prints the step that failed and returns 1
# nvmet_target_down PORT SUBNQN HOSTNQN       removes all of it (quietly, whatever exists)
NVMET_CFS=/sys/kernel/config/nvmet

nvmet_target_up() {
    _port=$1 _sub=$NVMET_CFS/subsystems/$2 _host=$NVMET_CFS/hosts/$3
    mkdir "$_sub" || { echo "nvmet subsystem $2" >&2; return 1; }
    echo 0 > "$_sub/attr_allow_any_host"
    mkdir "$_host"
    ln -s "$_host" "$_sub/allowed_hosts/$3"
    mkdir "$_sub/namespaces/1"
    echo "$4" > "$_sub/namespaces/1/device_path"
    echo 1 > "$_sub/namespaces/1/buffered_io"
    echo 1 > "$_sub/namespaces/1/enable" || { echo "nvmet namespace enable" >&2; return 1; }
    mkdir "$NVMET_CFS/ports/$_port"
    echo tcp > "$NVMET_CFS/ports/$_port/addr_trtype"
    echo ipv4 > "$NVMET_CFS/ports/$_port/addr_adrfam"
    echo 127.0.0.1 > "$NVMET_CFS/ports/$_port/addr_traddr"
    echo "$_port" > "$NVMET_CFS/ports/$_port/addr_trsvcid"
    echo tls1.3 > "$NVMET_CFS/ports/$_port/addr_tsas" || { echo "addr_tsas tls1.3" >&2; return 1; }
    ln -s "$_sub" "$NVMET_CFS/ports/$_port/subsystems/$2" || { echo "nvmet port link" >&2; return 1; }
}

nvmet_target_down() {
    rm -f "$NVMET_CFS/ports/$1/subsystems/$2" 2>/dev/null
    rmdir "$NVMET_CFS/ports/$1" 2>/dev/null
    [ -d "$NVMET_CFS/subsystems/$2/namespaces/1" ] && echo 0 > "$NVMET_CFS/subsystems/$2/namespaces/1/enable"
    rmdir "$NVMET_CFS/subsystems/$2/namespaces/1" 2>/dev/null
    rm -f "$NVMET_CFS/subsystems/$2/allowed_hosts/$3" 2>/dev/null
    rmdir "$NVMET_CFS/subsystems/$2" "$NVMET_CFS/hosts/$3" 2>/dev/null
}
