#!/usr/bin/env bash
# Provisions everything kiln needs to build, test and train, and does nothing
# (in well under a second) when it is already there:
#   1. libtorch: PyPI's torch==2.11.0 wheel, pip-installed (--target) into a
#      per-user cache shared by clones; `.libtorch` in the project links to it.
#      A user's own $LIBTORCH is honoured instead. Beside torch, pinned and
#      without their dependencies: safetensors, packaging, numpy (reference
#      scripts) and tensorboard, protobuf, absl-py (TensorBoard's event reader,
#      for kiln-loop's TensorBoard tests), torchvision and Pillow (the references
#      of kiln-loop's image decoding and transforms).
#   2. `.cargo/config.toml` (git-ignored): tells torch-sys where libtorch is and
#      gives every binary an rpath, so nothing needs exporting.
#   3. FashionMNIST: Debian's dataset-fashion-mnist, from /usr/share/datasets or
#      unpacked from the package (apt-get download + dpkg-deb -x, no root).
#   4. MPI for the `mpi` feature: Open MPI and libclang from Debian (root:
#      apt-get install; otherwise an error naming the packages).
#   5. libjpeg-turbo's TurboJPEG library from Debian (kiln-loop decodes JPEG
#      with it, as PIL does with libjpeg-turbo): apt-get install as for MPI.
set -euo pipefail

TORCH_VERSION=2.11.0
SAFETENSORS_VERSION=0.7.0
PACKAGING_VERSION=25.0
NUMPY_VERSION=2.3.5
EXPECTTEST_VERSION=0.3.0
TENSORBOARD_VERSION=2.21.0
PROTOBUF_VERSION=7.36.2
ABSL_VERSION=2.5.1
TORCHVISION_VERSION=0.26.0
PILLOW_VERSION=13.0.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}

die() { echo "kiln setup: error: $*" >&2; exit 1; }
say() { echo "kiln setup: $*" >&2; }

# --- 1. libtorch -------------------------------------------------------------
torch_version_of() { # prints the version recorded in a torch package dir, if any
  sed -n "s/^__version__ = '\([^'+]*\).*/\1/p" "$1/version.py" 2>/dev/null || true
}

if [ -n "${LIBTORCH:-}" ]; then
  libtorch=$LIBTORCH
  [ -d "$libtorch/lib" ] && [ -d "$libtorch/include" ] ||
    die "LIBTORCH=$libtorch has no lib/ and include/; point it at a libtorch $TORCH_VERSION directory or unset it"
else
  wheel_dir=$cache/torch-$TORCH_VERSION
  libtorch=$wheel_dir/torch
  if [ "$(torch_version_of "$libtorch")" != "$TORCH_VERSION" ]; then
    command -v python3 >/dev/null 2>&1 ||
      die "python3 is missing: install python3 and pip (Debian: apt-get install python3 python3-pip), or set LIBTORCH to a libtorch $TORCH_VERSION directory"
    python3 -m pip --version >/dev/null 2>&1 ||
      die "pip is missing for python3: install it (Debian: apt-get install python3-pip), or set LIBTORCH to a libtorch $TORCH_VERSION directory"
    say "installing torch==$TORCH_VERSION from PyPI into $wheel_dir (about 4.6 GB, once per machine)"
    mkdir -p "$cache"
    partial=$(mktemp -d "$cache/torch-$TORCH_VERSION.partial.XXXXXX")
    trap 'rm -rf "$partial"' EXIT
    python3 -m pip install --quiet --no-input --disable-pip-version-check \
      --no-warn-script-location --target "$partial" "torch==$TORCH_VERSION" ||
      die "pip could not install torch==$TORCH_VERSION (see above)"
    [ "$(torch_version_of "$partial/torch")" = "$TORCH_VERSION" ] ||
      die "pip installed a torch whose version is not $TORCH_VERSION"
    rm -rf "$wheel_dir"
    mv "$partial" "$wheel_dir"
    trap - EXIT
  fi
  # safetensors (+ packaging, numpy) for Python: the reference scripts read and write kiln's
  # checkpoints with it (safetensors.torch.load_file / save_file).
  if [ ! -f "$wheel_dir/safetensors/torch.py" ] || [ ! -d "$wheel_dir/packaging" ] || [ ! -d "$wheel_dir/numpy" ]; then
    say "adding safetensors, packaging and numpy to $wheel_dir"
    python3 -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
      --target "$wheel_dir" "safetensors==$SAFETENSORS_VERSION" "packaging==$PACKAGING_VERSION" "numpy==$NUMPY_VERSION" ||
      die "pip could not install safetensors==$SAFETENSORS_VERSION (see above)"
  fi
  # expecttest: torch.testing._internal (PyTorch's optim_db / module_db, which the
  # conformance fixture generators walk) imports it.
  if [ ! -d "$wheel_dir/expecttest" ]; then
    say "adding expecttest to $wheel_dir"
    python3 -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
      --target "$wheel_dir" "expecttest==$EXPECTTEST_VERSION" ||
      die "pip could not install expecttest==$EXPECTTEST_VERSION (see above)"
  fi
  # tensorboard + protobuf + absl-py (numpy is above): all that TensorBoard's
  # event reader (EventAccumulator, its data provider, the HParams plugin's
  # session list) and torch.utils.tensorboard import. kiln-loop's tests read
  # kiln's event files with them. (The `tensorboard` server needs more:
  # werkzeug, markdown, grpcio, pillow; not installed here.)
  tb_ok() {
    [ -d "$wheel_dir/tensorboard-$TENSORBOARD_VERSION.dist-info" ] &&
      [ -d "$wheel_dir/protobuf-$PROTOBUF_VERSION.dist-info" ] &&
      [ -d "$wheel_dir/absl_py-$ABSL_VERSION.dist-info" ] &&
      [ -f "$wheel_dir/tensorboard/backend/event_processing/event_accumulator.py" ] &&
      [ -f "$wheel_dir/google/protobuf/__init__.py" ] && [ -f "$wheel_dir/absl/__init__.py" ]
  }
  if ! tb_ok; then
    say "adding tensorboard==$TENSORBOARD_VERSION, protobuf==$PROTOBUF_VERSION and absl-py==$ABSL_VERSION to $wheel_dir"
    # pip --target does not replace what is there: remove older versions first.
    rm -rf "$wheel_dir"/tensorboard "$wheel_dir"/tensorboard-*.dist-info \
      "$wheel_dir"/google/protobuf "$wheel_dir"/google/_upb "$wheel_dir"/protobuf-*.dist-info \
      "$wheel_dir"/absl "$wheel_dir"/absl_py-*.dist-info
    python3 -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
      --target "$wheel_dir" "tensorboard==$TENSORBOARD_VERSION" "protobuf==$PROTOBUF_VERSION" "absl-py==$ABSL_VERSION" ||
      die "pip could not install tensorboard==$TENSORBOARD_VERSION (see above)"
    tb_ok || die "tensorboard==$TENSORBOARD_VERSION, protobuf==$PROTOBUF_VERSION or absl-py==$ABSL_VERSION is still missing from $wheel_dir"
  fi
  # torchvision + Pillow (numpy is above): the references of kiln-loop's image
  # tests (PIL's decoded pixels, datasets.ImageFolder, transforms.v2). torchvision
  # imports nothing else for them; its other extras (scipy, gdown) are not needed.
  tv_ok() {
    [ -d "$wheel_dir/torchvision-$TORCHVISION_VERSION.dist-info" ] &&
      [ -d "$wheel_dir/pillow-$PILLOW_VERSION.dist-info" ] &&
      [ -f "$wheel_dir/torchvision/transforms/v2/__init__.py" ] && [ -f "$wheel_dir/PIL/Image.py" ]
  }
  if ! tv_ok; then
    say "adding torchvision==$TORCHVISION_VERSION and pillow==$PILLOW_VERSION to $wheel_dir"
    rm -rf "$wheel_dir"/torchvision "$wheel_dir"/torchvision-*.dist-info "$wheel_dir"/torchvision.libs \
      "$wheel_dir"/PIL "$wheel_dir"/pillow-*.dist-info "$wheel_dir"/pillow.libs
    python3 -m pip install --quiet --no-input --disable-pip-version-check --no-deps \
      --target "$wheel_dir" "torchvision==$TORCHVISION_VERSION" "pillow==$PILLOW_VERSION" ||
      die "pip could not install torchvision==$TORCHVISION_VERSION (see above)"
    tv_ok || die "torchvision==$TORCHVISION_VERSION or pillow==$PILLOW_VERSION is still missing from $wheel_dir"
  fi
  ln -sfn "$wheel_dir" "$root/.libtorch"
fi
libtorch=$(cd "$libtorch" && pwd -P)

# --- 2. cargo configuration ----------------------------------------------------
# The rpath lets target/*/kiln and every test binary run from any directory.
config=$root/.cargo/config.toml
want=$(cat <<TOML
# Written by scripts/setup.sh; do not edit (it is rewritten when libtorch moves).
[env]
LIBTORCH = "$libtorch"
KILN_DEFAULT_DATA_DIR = "$root/.data/fashion-mnist"

[target.x86_64-unknown-linux-gnu]
rustflags = ["-C", "link-arg=-Wl,-rpath,$libtorch/lib"]

[target.aarch64-unknown-linux-gnu]
rustflags = ["-C", "link-arg=-Wl,-rpath,$libtorch/lib"]
TOML
)
if [ "$(cat "$config" 2>/dev/null)" != "$want" ]; then
  mkdir -p "$root/.cargo"
  printf '%s\n' "$want" >"$config.tmp" && mv "$config.tmp" "$config"
fi

# --- 3. FashionMNIST -----------------------------------------------------------
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
has_idx() { for f in $files; do [ -f "$1/$f.gz" ] || [ -f "$1/$f" ] || return 1; done; }

data=$root/.data/fashion-mnist
if ! has_idx "$data"; then
  mkdir -p "$root/.data"
  if has_idx /usr/share/datasets/fashion-mnist; then
    ln -sfn /usr/share/datasets/fashion-mnist "$data"
  else
    unpacked=$cache/dataset-fashion-mnist
    if ! has_idx "$unpacked/usr/share/datasets/fashion-mnist"; then
      command -v apt-get >/dev/null 2>&1 ||
        die "FashionMNIST is missing and apt-get is not available: put the four IDX files in $data (or pass --data-dir)"
      say "unpacking Debian's dataset-fashion-mnist into $unpacked"
      tmp=$(mktemp -d)
      (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null 2>&1) ||
        (apt-get update >/dev/null 2>&1 && cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null 2>&1) ||
        die "apt-get download dataset-fashion-mnist failed; install it (apt-get install dataset-fashion-mnist) or pass --data-dir"
      rm -rf "$unpacked.partial" && mkdir -p "$unpacked.partial"
      dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$unpacked.partial"
      rm -rf "$tmp" "$unpacked" && mv "$unpacked.partial" "$unpacked"
    fi
    ln -sfn "$unpacked/usr/share/datasets/fashion-mnist" "$data"
  fi
fi

# --- 4. MPI (data-parallel training, cargo feature `mpi`; `make test` uses it) --
# Open MPI from Debian, plus libclang for the bindgen run of the `mpi` crate's
# build script. Installed with apt-get when root; otherwise a one-line error.
# KILN_NO_MPI=1 skips this section (default-feature builds need no MPI).
mpi_packages="libopenmpi-dev openmpi-bin libclang-dev"
has_mpi() {
  command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 &&
    [ -n "$(mpicc -showme:incdirs 2>/dev/null)" ] &&
    ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1
}
if [ -z "${KILN_NO_MPI:-}" ] && ! has_mpi; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $mpi_packages (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q $mpi_packages >/dev/null 2>&1 ||
      (apt-get update >/dev/null 2>&1 && apt-get install -y -q $mpi_packages >/dev/null 2>&1) ||
      die "apt-get install $mpi_packages failed"
    has_mpi || die "MPI is still missing after installing $mpi_packages"
  else
    die "MPI is missing: install $mpi_packages (as root: apt-get install $mpi_packages), or set KILN_NO_MPI=1 to build without the mpi feature"
  fi
fi

# --- 5. libjpeg-turbo (kiln-loop's JPEG decoder, the `turbojpeg` crate) --------
# Debian's TurboJPEG library and its pkg-config file, found by turbojpeg-sys.
jpeg_packages="libturbojpeg0-dev"
has_turbojpeg() {
  [ -f /usr/include/turbojpeg.h ] && ls /usr/lib/*/libturbojpeg.so >/dev/null 2>&1
}
if ! has_turbojpeg; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing $jpeg_packages (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q $jpeg_packages >/dev/null 2>&1 ||
      (apt-get update >/dev/null 2>&1 && apt-get install -y -q $jpeg_packages >/dev/null 2>&1) ||
      die "apt-get install $jpeg_packages failed"
    has_turbojpeg || die "libturbojpeg is still missing after installing $jpeg_packages"
  else
    die "libjpeg-turbo's TurboJPEG library is missing: install $jpeg_packages (as root: apt-get install $jpeg_packages)"
  fi
fi
