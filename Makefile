# Quick start on a fresh Debian machine, as root:
#   make image    install what is needed, lock the default manifest's packages, build the image
#   make check    the whole test suite (ruff, mypy, pytest; the boot test included)

OUT ?= ./output
STORE ?= ./.osbuild
PYTHON ?= python3
SAMPLE ?= samples/debian-bookworm-v2.json
# The pipeline of SAMPLE that makes the image (format 1: assembler).
EXPORT ?= qcow2
LOCKED = $(OUT)/$(basename $(notdir $(SAMPLE))).locked.json

# Debian packages the engine needs on the host to build the default image: the sample's
# stages run with the tools of its own build pipeline, whose first bootstrap uses mmdebstrap.
DEB_PACKAGES = bubblewrap mmdebstrap apt-utils python3 python3-jsonschema debian-archive-keyring ca-certificates \
	util-linux mount tar uidmap
# What the test suite adds: the tools that read an image's bytes back (partition tables, superblocks,
# FAT, qemu-img), qemu and OVMF for the boot tests, and the tools of the stage tests that use the host
# as their build root (disk, RPM and SELinux stages).
TEST_PACKAGES = passwd systemd fdisk gdisk e2fsprogs xfsprogs dosfstools mtools btrfs-progs grub-pc-bin \
	grub-efi-amd64-bin grub-common qemu-utils qemu-system-x86 ovmf zstd xz-utils bzip2 procps \
	rpm dnf createrepo-c gnupg policycoreutils
PY_PACKAGES = jsonschema pytest ruff mypy
# Every Python that may run the engine: root's, and Debian's, which ordinary users get.
ENGINE_PYTHONS = $(PYTHON) /usr/bin/python3

.PHONY: image check deps test-deps lint test

# apt-get install what of a package list is missing; one line when it cannot.
define install_debs
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq || echo "apt-get update reported errors; trying to install anyway"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || \
		{ echo "make $@: apt-get could not install:$$missing" >&2; exit 1; }; \
	fi
endef

deps:
	$(call install_debs,$(DEB_PACKAGES))
	@$(PYTHON) -c 'import jsonschema' 2>/dev/null || \
		$(PYTHON) -m pip install -q --root-user-action=ignore jsonschema || \
		{ echo "make deps: pip could not install jsonschema into $(PYTHON)" >&2; exit 1; }
	@for py in $(ENGINE_PYTHONS); do \
		$$py -c 'import jsonschema' 2>/dev/null || \
		{ echo "make deps: $$py cannot import jsonschema, which the engine needs (apt-get install python3-jsonschema, or $$py -m pip install jsonschema)" >&2; exit 1; }; \
	done

test-deps: deps
	$(call install_debs,$(TEST_PACKAGES))
	@$(PYTHON) -c 'import jsonschema, pytest, ruff, mypy' 2>/dev/null || \
		$(PYTHON) -m pip install -q --root-user-action=ignore $(PY_PACKAGES) || \
		{ echo "make test-deps: pip could not install $(PY_PACKAGES) into $(PYTHON)" >&2; exit 1; }

IMAGE = $(OUT)/$(EXPORT)/debian-bookworm.qcow2

image: deps
	@mkdir -p $(OUT)
	$(PYTHON) tools/osbuild-depsolve-apt $(SAMPLE) -o $(LOCKED)
	$(PYTHON) -m osbuild --store $(STORE) --output-directory $(OUT) --export $(EXPORT) $(LOCKED)
	@echo
	@echo "Image: $(IMAGE) (GPT; boots by BIOS and UEFI; root password: osbuild)"
	@echo "Boot it, check it comes up and root can log in:  $(PYTHON) tools/osbuild-boot-test [--uefi] --login root:osbuild $(IMAGE)"
	@echo "Or interactively:  qemu-system-x86_64 -m 1024 -nographic -drive file=$(IMAGE),if=virtio,snapshot=on"

# Modules and tools are Python files without an extension: ruff only checks them when named.
SCRIPTS = $(filter-out %.json,$(wildcard stages/* assemblers/* sources/* runners/* tools/* bench/*))

lint: test-deps
	$(PYTHON) -m ruff check --force-exclude osbuild test $(SCRIPTS)
	$(PYTHON) -m mypy

test: test-deps
	$(PYTHON) -m pytest -q test

check: lint test
