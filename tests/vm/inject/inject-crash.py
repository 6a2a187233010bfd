#!/usr/bin/env python3
"""Runs inside the guest (tests/vm/run): power loss at every point of `thinsnap inject`.

    inject-crash.py BUILD_DIR [SCENARIO...]     (default: all; replace, mkdir-p)

Each operation runs against a dm-log-writes device stacked on a loop device, so
the kernel records every write and every flush (REQ_PREFLUSH) in the order the
device completed them. The log is then replayed onto the image the operation
started from, and every state a power loss could leave is checked:

  - every prefix of the log (the writes in completion order), and
  - the state at each flush plus any single write of the next flush window
    (the disk may persist the writes of one window in any order).

In each state the path holds the old content or the complete new one (or is
absent, for a new file or directory), every other file is byte-identical, and
`e2fsck -fn` is clean or reports only an inode of the operation that no entry
names (leaked: the new inode before the switch, the old one after it);
`e2fsck -fy` then repairs it, leaving the leaked inode in lost+found and
everyone's data intact. Once a flushed state shows the new content, every
later flushed state does. At each flushed state a read-only kernel mount reads
what debugfs reads. The final state is clean.

This is what proves the ordering of the flushes: a directory entry switched in
the same flush window as the data or inode it names shows up as a state with
the new inode number and the wrong content.
"""
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

BUILD = sys.argv[1]
ONLY = sys.argv[2:]
THINSNAP = os.path.join(BUILD, "cli", "thinsnap")
WORK = tempfile.mkdtemp(prefix="inject-crash.", dir="/tmp")
FAILS = []
ENV = dict(os.environ, DEBUGFS_PAGER="__none__", PAGER="__none__")

LOG_MAGIC = 0x6A736677736872
LOG_FLUSH, LOG_FUA, LOG_DISCARD, LOG_MARK = 1, 2, 4, 8


def run(*argv, check=True, quiet=False):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT,
                       env=ENV, text=True, errors="replace")
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d\n%s" % (" ".join(argv), p.returncode, p.stdout))
    return p


def ok(what):
    print("ok   " + what, flush=True)


def bad(what):
    print("FAIL " + what, flush=True)
    FAILS.append(what)


def path(name):
    return os.path.join(WORK, name)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)
    return path(name)


# ---- the write log ----

def read_log(log_img):
    """Returns the entries of a dm-log-writes log: (flags, byte offset, data)."""
    with open(log_img, "rb") as f:
        magic, version, nr, ssize = struct.unpack("<QQQI", f.read(28))
        if magic != LOG_MAGIC or version != 1:
            raise RuntimeError("%s: not a dm-log-writes log" % log_img)
        entries = []
        pos = ssize
        for _ in range(nr):
            f.seek(pos)
            sector, nsect, flags, _dlen = struct.unpack("<QQQQ", f.read(32))
            pos += ssize
            data = b""
            if nsect and not flags & (LOG_DISCARD | LOG_MARK):
                f.seek(pos)
                data = f.read(nsect * ssize)
                pos += nsect * ssize
            elif flags & LOG_DISCARD:
                data = bytes(nsect * ssize)  # a discarded range reads back as zeros on a loop file
            if flags & LOG_MARK:
                continue
            entries.append((flags, sector * ssize, data))
        return entries


def apply(img, entries):
    for flags, off, data in entries:
        img[off:off + len(data)] = data


# ---- reading a state back (debugfs, e2fsck) ----

def debugfs_state(img_path, paths):
    """For each guest path: None (absent) or (inode, type, content bytes or None)."""
    cmds, outs = [], []
    for i, p in enumerate(paths):
        cmds.append("stat %s" % p)
        out = path("dump.%d" % i)
        if os.path.exists(out):
            os.unlink(out)
        cmds.append("dump %s %s" % (p, out))
        outs.append(out)
    cmds.append("ls -l /lost+found")
    script = write("debugfs.cmds", ("\n".join(cmds) + "\n").encode())
    # -c: no bitmaps needed (nor read) to find and read files.
    p = run("debugfs", "-c", "-f", script, img_path, check=False, quiet=True)
    sections = re.split(r"^debugfs: ", p.stdout, flags=re.M)[1:]
    res = {}
    for i, p_ in enumerate(paths):
        sec = sections[2 * i]
        m = re.search(r"^Inode: (\d+)\s+Type: (\S+)", sec, flags=re.M)
        if not m:
            res[p_] = None
            continue
        content = None
        if m.group(2) == "regular":
            with open(outs[i], "rb") as f:
                content = f.read()
        res[p_] = (int(m.group(1)), m.group(2), content)
    lf = set()
    for line in sections[-1].splitlines()[1:]:
        m = re.match(r"\s*(\d+)\s+\d+\s+\(\d+\)\s+\d+\s+\d+\s+\d+\s+\S+\s+\S+\s+(.*)$", line)
        if m and m.group(2) not in (".", ".."):
            lf.add(int(m.group(1)))
    return res, lf


def named_inodes(out):
    """(inode, rest of the line) for every inode number e2fsck names."""
    return [(int(m.group(1)), m.group(2)) for m in re.finditer(r"[Ii]node (\d+)(.*)", out)]


def bitmap_differences(out, kind):
    """The (sign, first, last) ranges of e2fsck's "<kind> bitmap differences" lines."""
    res = []
    for m in re.finditer(r"^%s bitmap differences: (.*)$" % kind, out, flags=re.M):
        for t in re.finditer(r"([+-])\(?(\d+)(?:--(\d+))?\)?", m.group(1)):
            res.append((t.group(1), int(t.group(2)), int(t.group(3) or t.group(2))))
    return res


def inode_blocks(img_path, inos):
    """Every block (data and mapping) of the given inodes."""
    if not inos:
        return set()
    script = write("blocks.cmds", "".join("blocks <%d>\n" % i for i in inos).encode())
    p = run("debugfs", "-c", "-f", script, img_path, check=False, quiet=True)
    blocks = set()
    for sec in re.split(r"^debugfs: ", p.stdout, flags=re.M)[1:]:
        blocks.update(int(b) for b in sec.split()[2:] if b.isdigit())
    script = write("stat.cmds", "".join("stat <%d>\n" % i for i in inos).encode())
    p = run("debugfs", "-c", "-f", script, img_path, check=False, quiet=True)
    for m in re.finditer(r"\((?:IND|DIND|TIND|ETB\d+)\):(\d+)", p.stdout):
        blocks.add(int(m.group(1)))
    return blocks


def mount_state(img_path, paths):
    """What the kernel reads at each path of a read-only mount: None or the content
    (b"dir" for a directory)."""
    mnt = path("mnt")
    os.makedirs(mnt, exist_ok=True)
    r = run("mount", "-t", "ext4", "-o", "ro,loop", img_path, mnt, check=False)
    if r.returncode != 0:
        return "mount failed: " + r.stdout
    try:
        res = {}
        for p in paths:
            full = mnt + p
            if os.path.isdir(full):
                res[p] = b"dir"
            elif os.path.lexists(full):
                with open(full, "rb") as f:
                    res[p] = f.read()
            else:
                res[p] = None
        return res
    finally:
        run("umount", mnt)


class Scenario:
    def __init__(self, name, argv, objects):
        self.name = name
        self.argv = argv            # thinsnap inject arguments after the device
        self.objects = objects      # path -> (old content or None, new content or "dir")


def check_state(sc, label, img_path, base, final, bystanders, parents, leak_blocks, durable):
    """Checks one crash state; `durable`: the state at a completed flush. Returns
    the set of the scenario's paths that show the new object, and "clean" or "leak"."""
    paths = list(sc.objects) + list(bystanders)
    st, _ = debugfs_state(img_path, paths)
    errors = []
    new_shown = set()
    for p, (old, new) in sc.objects.items():
        got = st[p]
        if got is None:
            if old is not None:
                errors.append("%s is missing" % p)
            continue
        ino, typ, content = got
        if old is not None and ino == base[p][0]:
            if content != old:
                errors.append("%s: old inode %d with changed content" % (p, ino))
        elif ino == final[p][0]:
            new_shown.add(p)
            if new == "dir":
                if typ != "directory":
                    errors.append("%s: inode %d is a %s, not the new directory" % (p, ino, typ))
            elif content != new:
                errors.append("%s: new inode %d without its complete content (%s bytes)" %
                              (p, ino, len(content) if content is not None else "no"))
        else:
            errors.append("%s names inode %d, neither the old (%s) nor the new (%d)" %
                          (p, ino, base[p][0] if base[p] else "none", final[p][0]))
    for p, want in bystanders.items():
        if st[p] is None or st[p][2] != want:
            errors.append("bystander %s changed" % p)

    # The kernel reads the same, without any check first: at each flush and at
    # the end (a mount per state in between would double the test's time in
    # the lane; debugfs reads every state).
    if durable:
        seen = mount_state(img_path, paths)
        if isinstance(seen, str):
            errors.append(seen)
        else:
            for p in paths:
                want = None if st[p] is None else b"dir" if st[p][1] == "directory" else st[p][2]
                if seen[p] != want:
                    errors.append("the kernel reads %s differently" % p)

    # Inodes of the operation that no entry names in this state may leak.
    leakable = set()
    for p in sc.objects:
        for ino in (base[p][0] if base[p] else None, final[p][0]):
            if ino and not (st[p] and st[p][0] == ino):
                leakable.add(ino)
    allowed_blocks = set()
    for ino in leakable:
        allowed_blocks |= leak_blocks.get(ino, set())
    fsck = run("e2fsck", "-fn", img_path, check=False)
    verdict = "clean"
    if fsck.returncode != 0:
        verdict = "leak"
        if fsck.returncode != 4:
            errors.append("e2fsck -fn exit %d" % fsck.returncode)
        for ino, rest in named_inodes(fsck.stdout):
            if ino in leakable:
                continue
            m = re.match(r" ref count is (\d+), should be (\d+)\.", rest)
            if ino in parents and m and int(m.group(2)) == int(m.group(1)) + 1:
                continue  # a leaked directory's ".." counted in its parent
            errors.append("e2fsck names inode %d (leakable: %s)" % (ino, sorted(leakable)))
        # In use but marked free: only a leakable inode's blocks or the inode
        # itself (a block marked free under a live file could be handed out twice).
        for sign, a, b in bitmap_differences(fsck.stdout, "Block"):
            if sign == "+" and (durable or not set(range(a, b + 1)) <= allowed_blocks):
                errors.append("blocks %d-%d in use but marked free" % (a, b))
        for sign, a, b in bitmap_differences(fsck.stdout, "Inode"):
            if sign == "+" and (durable or not set(range(a, b + 1)) <= leakable):
                errors.append("inodes %d-%d in use but marked free" % (a, b))
        # A bitmap written without its descriptor (which holds its checksum) is
        # a torn commit: never at a completed flush.
        if durable and "does not match checksum" in fsck.stdout:
            errors.append("a bitmap checksum mismatch at a flush")
        fixed = path("fixed.img")
        shutil.copyfile(img_path, fixed)
        r = run("e2fsck", "-fy", fixed, check=False)
        if r.returncode != 1:
            errors.append("e2fsck -fy exit %d" % r.returncode)
        r = run("e2fsck", "-fn", fixed, check=False)
        if r.returncode != 0:
            errors.append("not clean after e2fsck -fy:\n" + r.stdout)
        st2, lf = debugfs_state(fixed, paths)
        for p in paths:
            if st2[p] != st[p]:
                errors.append("%s differs after the repair" % p)
        if not lf <= leakable:
            errors.append("lost+found holds %s, leakable %s" % (sorted(lf), sorted(leakable)))
    if errors:
        bad("%s %s: %s\n%s" % (sc.name, label, "; ".join(errors), fsck.stdout if verdict == "leak" else ""))
    return new_shown, verdict


def scenario(sc, base_img, bystanders):
    if ONLY and sc.name not in ONLY:
        return
    dev_img = path("dev.img")
    log_img = path("log.img")
    shutil.copyfile(base_img, dev_img)
    with open(log_img, "wb") as f:
        f.truncate(256 << 20)
    loops = []
    try:
        dev = run("losetup", "--find", "--show", dev_img).stdout.strip()
        loops.append(dev)
        log = run("losetup", "--find", "--show", log_img).stdout.strip()
        loops.append(log)
        size = run("blockdev", "--getsz", dev).stdout.strip()
        run("dmsetup", "create", "ic-log", "--table", "0 %s log-writes %s %s" % (size, dev, log))
        try:
            r = run(THINSNAP, "inject", "/dev/mapper/ic-log", *sc.argv, check=False)
        finally:
            run("dmsetup", "remove", "ic-log")
        if r.returncode != 0:
            bad("%s: thinsnap inject failed:\n%s" % (sc.name, r.stdout))
            return
    finally:
        for l in loops:
            run("losetup", "-d", l, check=False)

    entries = read_log(log_img)
    nflush = sum(1 for e in entries if e[0] & LOG_FLUSH)
    nwrite = sum(1 for e in entries if e[2])
    ok("%s: %d writes and %d flushes logged" % (sc.name, nwrite, nflush))

    with open(base_img, "rb") as f:
        base_bytes = bytearray(f.read())
    final_bytes = bytearray(base_bytes)
    apply(final_bytes, entries)
    with open(dev_img, "rb") as f:
        if f.read() != final_bytes:
            bad("%s: the replayed log does not give the device's content" % sc.name)
            return
    ok("%s: replaying the whole log gives the device's content" % sc.name)
    base_st, _ = debugfs_state(base_img, list(sc.objects))
    final_st, _ = debugfs_state(dev_img, list(sc.objects))
    for p in sc.objects:
        if final_st[p] is None:
            bad("%s: %s missing at the end" % (sc.name, p))
            return
    parents = {2} | {final_st[p][0] for p in sc.objects if sc.objects[p][1] == "dir"}
    leak_blocks = {}
    for p in sc.objects:
        if base_st[p]:
            leak_blocks[base_st[p][0]] = inode_blocks(base_img, [base_st[p][0]])
        leak_blocks[final_st[p][0]] = inode_blocks(dev_img, [final_st[p][0]])

    state_img = path("state.img")
    seen = {}

    def check(label, img_bytes, durable=False):
        h = (hashlib.sha256(img_bytes).digest(), durable)
        if h in seen:
            return seen[h]
        with open(state_img, "wb") as f:
            f.write(img_bytes)
        seen[h] = check_state(sc, label, state_img, base_st, final_st, bystanders, parents, leak_blocks,
                              durable)
        return seen[h]

    # Every prefix, in completion order; flushed states must never go back.
    img = bytearray(base_bytes)
    durable = [(0, bytes(img))]  # (index of the first entry after the flush, state)
    flushed_new = set()
    leaks = 0
    for i, (flags, off, data) in enumerate(entries):
        if flags & LOG_FLUSH:
            # The writes completed before a flush are durable once it completes.
            shown, verdict = check("flush before entry %d" % i, img, durable=True)
            if not flushed_new <= shown:
                bad("%s: flushed state at entry %d went back to old for %s" %
                    (sc.name, i, sorted(flushed_new - shown)))
            flushed_new |= shown
            durable.append((i, bytes(img)))
        img[off:off + len(data)] = data
        shown, verdict = check("prefix through entry %d" % i, img)
        leaks += verdict == "leak"
    shown, verdict = check("end", img, durable=True)
    if verdict != "clean" or shown != set(sc.objects):
        bad("%s: the complete operation is not clean and whole (%s, new: %s)" % (sc.name, verdict, sorted(shown)))

    # Any single write of a flush window on top of the state at its flush.
    singles = 0
    for k, (start, state) in enumerate(durable):
        end = durable[k + 1][0] if k + 1 < len(durable) else len(entries)
        for j in range(start, end):
            flags, off, data = entries[j]
            if not data:
                continue
            img = bytearray(state)
            img[off:off + len(data)] = data
            check("flush %d + entry %d alone" % (k, j), img)
            singles += 1
    ok("%s: %d distinct states checked (%d prefixes with a leaked inode, %d single-write states)" %
       (sc.name, len(seen), leaks, singles))


def main():
    run("modprobe", "dm-log-writes")
    old = os.urandom(20000)
    new = os.urandom(30000)
    tool = os.urandom(70000)
    base_img = path("base.img")
    with open(base_img, "wb") as f:
        f.truncate(16 << 20)
    run("mkfs.ext4", "-q", "-F", base_img)
    bystanders = {"/bin/tool": tool, "/etc/other": b"other\n", "/keep/dir/file": b"kept\n"}
    run(THINSNAP, "inject", base_img, write("old", old), "/etc/app.conf")
    for p, data in bystanders.items():
        run(THINSNAP, "inject", base_img, write("by", data), p)
    write("new", new)
    run("e2fsck", "-fn", base_img)

    scenario(Scenario("replace", [path("new"), "/etc/app.conf"], {"/etc/app.conf": (old, new)}),
             base_img, bystanders)
    scenario(Scenario("mkdir-p", [path("new"), "/new1/new2/f"],
                      {"/new1": (None, "dir"), "/new1/new2": (None, "dir"), "/new1/new2/f": (None, new)}),
             base_img, dict(bystanders, **{"/etc/app.conf": old}))

    if FAILS:
        print("inject-crash: %d check(s) failed" % len(FAILS))
        sys.exit(1)
    print("inject-crash: all checks passed")


if __name__ == "__main__":
    try:
        main()
    finally:
        subprocess.run(["dmsetup", "remove", "ic-log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(WORK, ignore_errors=True)
