# Quick start on a fresh Debian machine, as root:
#   make image    install what is needed, lock the default manifest's packages, build the image
#   make check    the whole test suite (ruff, mypy, pytest; the boot test included)

OUT ?= ./output
STORE ?= ./.osbuild
PYTHON ?= python3
SAMPLE ?= samples/debian-bookworm-qcow2.json
LOCKED = $(OUT)/$(basename $(notdir $(SAMPLE))).locked.json

# Debian packages the engine, its stages and its tests use from the host.
DEB_PACKAGES = bubblewrap mmdebstrap apt-utils python3 passwd systemd debian-archive-keyring ca-certificates \
	fdisk gdisk e2fsprogs xfsprogs dosfstools mtools btrfs-progs grub-pc-bin grub-efi-amd64-bin grub-common \
	qemu-utils qemu-system-x86 ovmf zstd xz-utils bzip2 tar \
	util-linux procps python3-jsonschema uidmap \
	rpm dnf createrepo-c gnupg policycoreutils
PY_PACKAGES = jsonschema pytest ruff mypy
# Every Python that may run the engine: root's, and Debian's, which ordinary users get.
ENGINE_PYTHONS = $(PYTHON) /usr/bin/python3

.PHONY: image check deps lint test

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq || echo "apt-get update reported errors; trying to install anyway"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || \
		{ echo "make deps: apt-get could not install:$$missing" >&2; exit 1; }; \
	fi
	@$(PYTHON) -c 'import jsonschema, pytest, ruff, mypy' 2>/dev/null || \
		$(PYTHON) -m pip install -q --root-user-action=ignore $(PY_PACKAGES) || \
		{ echo "make deps: pip could not install $(PY_PACKAGES) into $(PYTHON)" >&2; exit 1; }
	@for py in $(ENGINE_PYTHONS); do \
		$$py -c 'import jsonschema' 2>/dev/null || \
		{ echo "make deps: $$py cannot import jsonschema, which the engine needs (apt-get install python3-jsonschema, or $$py -m pip install jsonschema)" >&2; exit 1; }; \
	done

image: deps
	@mkdir -p $(OUT)
	$(PYTHON) tools/osbuild-depsolve-apt $(SAMPLE) -o $(LOCKED)
	$(PYTHON) -m osbuild --store $(STORE) --output-directory $(OUT) --export assembler $(LOCKED)
	@echo
	@echo "Image: $(OUT)/assembler/debian-bookworm.qcow2 (root password: osbuild)"
	@echo "Boot it, check it comes up and root can log in:  $(PYTHON) tools/osbuild-boot-test --login root:osbuild $(OUT)/assembler/debian-bookworm.qcow2"
	@echo "Or interactively:  qemu-system-x86_64 -m 1024 -nographic -drive file=$(OUT)/assembler/debian-bookworm.qcow2,if=virtio,snapshot=on"

# Modules and tools are Python files without an extension: ruff only checks them when named.
SCRIPTS = $(filter-out %.json,$(wildcard stages/* assemblers/* sources/* runners/* tools/* bench/*))

lint: deps
	$(PYTHON) -m ruff check --force-exclude osbuild test $(SCRIPTS)
	$(PYTHON) -m mypy

test: deps
	$(PYTHON) -m pytest -q test

check: lint test
