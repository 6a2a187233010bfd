"""Booting a VM's device with QEMU (TCG) on Debian's kernel from the lane's cache, the way a
microVM manager would: the device is the VM's root filesystem (/dev/vda, read-write) and
the kernel runs `init=<guest path>` from it.

Debian's kernel has virtio_blk and ext4 as modules, so a small initramfs (busybox and those
modules, made here from the cache's kernel package) loads them, mounts /dev/vda and
switch_roots into it, passing init= on. Python's standard library only.

    build_initramfs(kernel_dir, out_path)
    boot(kernel_dir, initramfs, device, init, vm_name, timeout) -> (console text, seconds)
"""
import os
import shutil
import subprocess
import tempfile
import time

MODULES = ["crc32c_generic", "virtio_pci", "virtio_blk", "ext4"]

INIT = r"""#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
for m in $(cat /modules); do insmod "/lib/modules/$m" || echo "boot: insmod $m failed"; done
init=/sbin/init
for a in $(cat /proc/cmdline); do case $a in init=*) init=${a#init=} ;; esac; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "boot: cannot mount /dev/vda"; poweroff -f; }
umount /proc
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
"""


def kernel_image(kernel_dir):
    kver = open(os.path.join(kernel_dir, "kver")).read().strip()
    vmlinux = os.path.join(kernel_dir, "vmlinux")
    if os.path.exists(vmlinux):
        return vmlinux
    return os.path.join(kernel_dir, "root", "boot", f"vmlinuz-{kver}")


def _module_files(kernel_dir):
    kver = open(os.path.join(kernel_dir, "kver")).read().strip()
    root = os.path.join(kernel_dir, "root")
    seen, order = set(), []
    for m in MODULES:
        out = subprocess.run(["modprobe", "-d", root, "-S", kver, "--show-depends", m],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod" and parts[1] not in seen:
                seen.add(parts[1])
                order.append(parts[1])
    return order


def build_initramfs(kernel_dir, out):
    """An initramfs (cpio newc, gzip) with busybox, the modules and the init above."""
    tmp = tempfile.mkdtemp(prefix="boot-initramfs.")
    try:
        img = os.path.join(tmp, "img")
        for d in ("bin", "dev", "proc", "newroot", "lib/modules"):
            os.makedirs(os.path.join(img, d))
        shutil.copy("/bin/busybox", os.path.join(img, "bin", "busybox"))
        names = []
        for path in _module_files(kernel_dir):
            name = os.path.basename(path)
            dest = os.path.join(img, "lib", "modules", name.split(".ko")[0] + ".ko")
            if name.endswith(".ko.xz"):
                with open(dest, "wb") as f:
                    subprocess.run(["xz", "-dc", path], stdout=f, check=True)
            elif name.endswith(".ko.zst"):
                with open(dest, "wb") as f:
                    subprocess.run(["zstd", "-qdc", path], stdout=f, check=True)
            else:
                shutil.copy(path, dest)
            names.append(os.path.basename(dest))
        with open(os.path.join(img, "modules"), "w") as f:
            f.write("\n".join(names) + "\n")
        with open(os.path.join(img, "init"), "w") as f:
            f.write(INIT)
        os.chmod(os.path.join(img, "init"), 0o755)
        files = subprocess.run(["find", ".", "-mindepth", "1"], cwd=img, capture_output=True,
                               text=True, check=True).stdout
        with open(out + ".tmp", "wb") as f:
            p1 = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=img,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            p2 = subprocess.Popen(["gzip", "-1"], stdin=p1.stdout, stdout=f)
            p1.stdout.close()
            p1.stdin.write(("\n".join(sorted(files.split())) + "\n").encode())
            p1.stdin.close()
            if p1.wait() != 0 or p2.wait() != 0:
                raise RuntimeError("cpio/gzip of the boot initramfs failed")
        os.rename(out + ".tmp", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def boot(kernel_dir, initramfs, device, init, vm_name, timeout=300, smp=1, mem=256):
    """Boots device as the VM's root disk; returns the serial console's text and the
    seconds QEMU ran. The guest powers itself off (the agent); a guest that does not is
    killed after timeout seconds."""
    argv = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", str(smp),
            "-m", str(mem), "-nographic", "-no-reboot", "-net", "none", "-monitor", "none",
            "-serial", "stdio", "-kernel", kernel_image(kernel_dir), "-initrd", initramfs,
            "-drive", f"file={device},format=raw,if=virtio,cache=unsafe",
            "-append", f"console=ttyS0 loglevel=1 panic=-1 edd=off rdinit=/init root=/dev/vda "
                       f"rw init={init} tsvm={vm_name}"]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace"), \
        time.monotonic() - t0
