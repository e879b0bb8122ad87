/*
 * SHA-256 of several equal-length inputs at once, for lib/sha256_native.ts
 * (Deno's FFI). Built by `deno task native` (scripts/build_native.ts) into
 * .tools/native/; written from FIPS 180-4.
 *
 * Why: a download checks every byte it receives, and on two cores the hash
 * is the largest part of its CPU. Inputs side by side go faster a core than
 * one at a time (docs/PERFORMANCE.md, sessions 31 and 39):
 * - on an x86 CPU without the SHA extensions one SHA-256 runs at 200-400
 *   MB/s a core; eight in the lanes of 256-bit vectors about 2.5 times as
 *   fast (WebAssembly's vectors have four lanes and no rotate, which is why
 *   this is native code). The kernel is compiled twice from sha256_x8.h:
 *   for AVX-512 (AVX-512VL's rotate and three-input logic on 256-bit
 *   vectors) and for AVX2 (shifts and two-input logic);
 * - with the SHA extensions, two inputs interleaved (sha256_ni.h) about 1.2
 *   to 1.5 times as fast as one.
 * The CPU picks the kernel at run time.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The kernels, as shoal_sha256_kernel returns them and shoal_sha256_multi takes them. */
enum { KERNEL_NONE = 0, KERNEL_AVX2 = 1, KERNEL_AVX512 = 2, KERNEL_SHANI = 3 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

/* Round constants and initial hash value (FIPS 180-4, 4.2.2 and 5.3.3). */
static const uint32_t ROUND_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
static const uint32_t ROUND_IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* The vector kernels hash eight inputs at once, one in each 32-bit lane of a 256-bit register. */
#define X8_LANES 8

/* AVX-512VL: one instruction each for a rotate, a three-way xor, Ch and Maj (truth tables 0x96, 0xca, 0xe8). */
#define KERNEL sha256_x8_avx512
#define TARGET "avx2,avx512f,avx512vl"
#define ROR(x, n) _mm256_ror_epi32(x, n)
#define XOR3(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0x96)
#define CH(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xca)
#define MAJ(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xe8)
#define GATHER(low, high, at) \
  _mm512_i64gather_epi32(_mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1), (const void *)(intptr_t)(at), 1)
#include "sha256_x8.h"
#undef KERNEL
#undef TARGET
#undef ROR
#undef XOR3
#undef CH
#undef MAJ
#undef GATHER

/* AVX2: rotates from two shifts; Ch as g ^ (e & (f ^ g)), Maj as b ^ ((a ^ b) & (b ^ c)). */
#define KERNEL sha256_x8_avx2
#define TARGET "avx2"
#define ROR(x, n) _mm256_or_si256(_mm256_srli_epi32(x, n), _mm256_slli_epi32(x, 32 - (n)))
#define XOR3(x, y, z) _mm256_xor_si256(_mm256_xor_si256(x, y), z)
#define CH(x, y, z) _mm256_xor_si256(z, _mm256_and_si256(x, _mm256_xor_si256(y, z)))
#define MAJ(x, y, z) _mm256_xor_si256(y, _mm256_and_si256(_mm256_xor_si256(x, y), _mm256_xor_si256(y, z)))
#define GATHER(low, high, at)                                                  \
  _mm256_set_m128i(_mm256_i64gather_epi32((const int *)(intptr_t)(at), high, 1), \
                   _mm256_i64gather_epi32((const int *)(intptr_t)(at), low, 1))
#include "sha256_x8.h"

#include "sha256_ni.h"

/* Whether the CPU has the SHA extensions (CPUID leaf 7, EBX bit 29), asked once: CPUID is slow in a virtual machine. */
static int has_sha(void) {
  static int known = -1; /* threads that race here store the same answer */
  if (known < 0) {
    unsigned a, b, c, d;
    known = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
  }
  return known;
}

/* How many inputs `kernel` hashes at once, or 0 when this CPU cannot run it. */
static int kernel_lanes(int kernel) {
  __builtin_cpu_init();
  switch (kernel) {
    case KERNEL_SHANI: return has_sha() && __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("ssse3") ? NI_LANES : 0;
    case KERNEL_AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") ? X8_LANES : 0;
    case KERNEL_AVX2: return __builtin_cpu_supports("avx2") ? X8_LANES : 0;
    default: return 0;
  }
}
#else
static int kernel_lanes(int kernel) { return (void)kernel, 0; }
#endif

/* The best kernel this CPU runs (KERNEL_SHANI, KERNEL_AVX512, KERNEL_AVX2), or KERNEL_NONE: nothing here runs. */
int shoal_sha256_kernel(void) {
  if (kernel_lanes(KERNEL_SHANI)) return KERNEL_SHANI;
  if (kernel_lanes(KERNEL_AVX512)) return KERNEL_AVX512;
  return kernel_lanes(KERNEL_AVX2) ? KERNEL_AVX2 : KERNEL_NONE;
}

/* How many inputs `kernel` (a KERNEL_ value) hashes in one call, or 0 when this CPU cannot run it. */
int shoal_sha256_lanes(int32_t kernel) { return kernel_lanes(kernel); }

/*
 * Writes the SHA-256 of each of the `count` inputs (addresses in `inputs`, each `length` bytes) into `out`, 32 bytes
 * each, with `kernel` (a KERNEL_ value). Returns 0, or -1 when this CPU cannot run the kernel or count is not from 1
 * to its lanes. Fewer inputs than lanes cost the same as a full call.
 */
int shoal_sha256_multi(const uint64_t *inputs, uint32_t count, uint64_t length, uint8_t *out, int32_t kernel) {
  const int lanes = kernel_lanes(kernel);
  if (lanes == 0 || count < 1 || count > (uint32_t)lanes) return -1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  const uint8_t *in[X8_LANES]; /* the most lanes of any kernel (NI_LANES is 2) */
  uint8_t digests[X8_LANES * 32];
  for (int i = 0; i < lanes; i++) in[i] = (const uint8_t *)(uintptr_t)inputs[(uint32_t)i < count ? i : 0];
  if (kernel == KERNEL_SHANI) sha256_ni_x2(in, (size_t)length, digests);
  else if (kernel == KERNEL_AVX512) sha256_x8_avx512(in, (size_t)length, digests);
  else sha256_x8_avx2(in, (size_t)length, digests);
  memcpy(out, digests, 32 * (size_t)count);
  return 0;
#else
  (void)inputs, (void)length, (void)out;
  return -1;
#endif
}
