#!/usr/bin/env bash
# The CMake flags llama-cpp-python is built with (make setup). One flag set for every machine:
# the build must run on any x86-64 CPU of the project's kind (AVX2-only EPYC, AVX-512 EPYC,
# AVX-512/AMX Xeon), so nothing is taken from the build machine (GGML_NATIVE=OFF) and the
# instruction sets are listed: AVX2 + FMA + F16C + BMI2, and explicitly no AVX-512 and no AMX
# (the AMX weight-repack path crashed decoding on a Xeon; docs/PORTABILITY.md has the measurements).
set -euo pipefail
case "$(uname -m)" in
  x86_64|amd64)
    echo "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
         "-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF" \
         "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
  *)
    # aarch64 and others: ggml's portable defaults for the architecture
    echo "-DGGML_NATIVE=OFF" ;;
esac
