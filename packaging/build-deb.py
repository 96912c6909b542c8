#!/usr/bin/env python3
"""Build cove's Debian package with dpkg-deb from server/Cargo.toml's
[package.metadata.deb] table: the same assets, conffiles, maintainer
scripts and control fields that `cargo deb -p cove` uses, without needing
cargo-deb installed (building it takes minutes; dpkg-deb is on every
Debian system).

    python3 packaging/build-deb.py [--binary target/release/cove] [--out target/debian]

Prints the path of the .deb it wrote.
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATE = os.path.join(ROOT, "server")


def load():
    with open(os.path.join(CRATE, "Cargo.toml"), "rb") as f:
        crate = tomllib.load(f)
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        workspace = tomllib.load(f)
    package = crate["package"]
    version = package["version"]
    if isinstance(version, dict):  # version.workspace = true
        version = workspace["workspace"]["package"]["version"]
    # cargo-deb's rule: the crate's version, then the Debian revision.
    version = f"{version}-{package['metadata']['deb'].get('revision', '1')}"
    license = package.get("license", {})
    if isinstance(license, dict):
        license = workspace["workspace"]["package"].get("license", "")
    return package, package["metadata"]["deb"], version, license


def stage_assets(meta, binary, stage):
    for source, dest, mode in meta["assets"]:
        program = source.startswith("target/release/")
        if program:
            source = binary
        else:
            source = os.path.join(CRATE, source)
        if dest.endswith("/"):
            dest = os.path.join(dest, os.path.basename(source))
        target = os.path.join(stage, dest.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, int(mode, 8))
        # cargo-deb strips the programs it packages (its `strip` default).
        if program and meta.get("strip", True) and shutil.which("strip"):
            subprocess.run(["strip", "--strip-unneeded", target], check=True)


def control(package, meta, version, arch, stage):
    size_kib = 0
    for dirpath, _, files in os.walk(stage):
        for name in files:
            size_kib += (os.path.getsize(os.path.join(dirpath, name)) + 1023) // 1024
    extended = meta.get("extended-description", "").strip()
    lines = [
        f"Package: {meta.get('name', package['name'])}",
        f"Version: {version}",
        f"Architecture: {arch}",
        f"Maintainer: {meta['maintainer']}",
        f"Installed-Size: {size_kib}",
        f"Depends: {meta['depends']}",
        f"Section: {meta.get('section', 'misc')}",
        f"Priority: {meta.get('priority', 'optional')}",
        f"Description: {package.get('description', package['name'])}",
    ]
    for paragraph in extended.split("\n\n"):
        words, line = paragraph.split(), ""
        for word in words:
            if line and len(line) + 1 + len(word) > 78:
                lines.append(" " + line)
                line = word
            else:
                line = f"{line} {word}".strip()
        if line:
            lines.append(" " + line)
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cove"))
    parser.add_argument("--out", default=os.path.join(ROOT, "target/debian"))
    parser.add_argument(
        "--compression", default="xz", choices=["xz", "gzip"], help="gzip: faster, bigger"
    )
    args = parser.parse_args()
    if not os.path.isfile(args.binary):
        sys.exit(f"build-deb: no binary at {args.binary} (cargo build --release first)")
    package, meta, version, license = load()
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="cove-deb-") as stage:
        os.chmod(stage, 0o755)
        stage_assets(meta, args.binary, stage)
        name = meta.get("name", package["name"])
        doc = os.path.join(stage, "usr/share/doc", name)
        os.makedirs(doc, exist_ok=True)
        with open(os.path.join(doc, "copyright"), "w") as f:
            f.write(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                f"Upstream-Name: {name}\n\nFiles: *\nLicense: {license}\n"
            )
        sums = []
        for dirpath, _, files in sorted(os.walk(stage)):
            for fname in sorted(files):
                path = os.path.join(dirpath, fname)
                with open(path, "rb") as f:
                    digest = hashlib.md5(f.read()).hexdigest()
                sums.append(f"{digest}  {os.path.relpath(path, stage)}\n")
        debian = os.path.join(stage, "DEBIAN")
        os.makedirs(debian)
        with open(os.path.join(debian, "control"), "w") as f:
            f.write(control(package, meta, version, arch, stage))
        with open(os.path.join(debian, "md5sums"), "w") as f:
            f.writelines(sums)
        with open(os.path.join(debian, "conffiles"), "w") as f:
            f.writelines(c + "\n" for c in meta.get("conf-files", []))
        scripts = os.path.join(CRATE, meta["maintainer-scripts"])
        for script in ("preinst", "postinst", "prerm", "postrm"):
            source = os.path.join(scripts, script)
            if os.path.isfile(source):
                shutil.copyfile(source, os.path.join(debian, script))
                os.chmod(os.path.join(debian, script), 0o755)
        os.makedirs(args.out, exist_ok=True)
        deb = os.path.join(args.out, f"{name}_{version}_{arch}.deb")
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", f"-Z{args.compression}", "--build", stage, deb],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    print(deb)


if __name__ == "__main__":
    main()
