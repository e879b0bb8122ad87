/*
 * SHA-256 with the x86 SHA extensions (sha_ni), two equal-length inputs
 * interleaved. Written from FIPS 180-4 and Intel's definitions of the
 * SHA256RNDS2, SHA256MSG1 and SHA256MSG2 instructions; included by
 * sha256_multi.c after ROUND_K and ROUND_IV.
 *
 * Why two: one input runs as fast as node:crypto's (both about 1.2 GB/s on
 * a chunk that has left the cache, 1.95 in it); two side by side keep the
 * SHA unit busy while each waits on its memory and on its own rounds: 1.8
 * and 2.35 GB/s (docs/PERFORMANCE.md, session 39).
 *
 * The instructions keep the state as two vectors: ABEF (dwords F, E, B, A
 * from lane 0 up) and CDGH (H, G, D, C). SHA256RNDS2 runs two rounds on them
 * and returns the new ABEF; the old ABEF is the new CDGH.
 */

#define NI_LANES 2
#define NI_TARGET "sha,sse4.1,ssse3"
/* A shuffle that turns each 32-bit word around: the message and the digest are big-endian. */
#define NI_BIG_ENDIAN _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL)

/* One 64-byte block of each lane, at `offset` into lane l's input `in[l]`. */
__attribute__((target(NI_TARGET), always_inline)) static inline void sha256_ni_block(
    __m128i abef[NI_LANES], __m128i cdgh[NI_LANES], const uint8_t *const in[NI_LANES], size_t offset) {
  const __m128i swap = NI_BIG_ENDIAN;
  __m128i w[NI_LANES][4], abef0[NI_LANES], cdgh0[NI_LANES];
  for (int l = 0; l < NI_LANES; l++) abef0[l] = abef[l], cdgh0[l] = cdgh[l];
  /* Four rounds a step, words 4i..4i+3 of the schedule in w[l][i % 4]. Unrolled, so that w stays in registers. */
#pragma GCC unroll 16
  for (int i = 0; i < 16; i++) {
    const __m128i k = _mm_loadu_si128((const __m128i *)&ROUND_K[4 * i]);
#pragma GCC unroll 2
    for (int l = 0; l < NI_LANES; l++) {
      if (i < 4) {
        w[l][i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(in[l] + offset + 16 * i)), swap);
      } else {
        /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time */
        const __m128i w7 = _mm_alignr_epi8(w[l][(i + 3) & 3], w[l][(i + 2) & 3], 4);
        const __m128i partial = _mm_add_epi32(_mm_sha256msg1_epu32(w[l][i & 3], w[l][(i + 1) & 3]), w7);
        w[l][i & 3] = _mm_sha256msg2_epu32(partial, w[l][(i + 3) & 3]);
      }
      const __m128i wk = _mm_add_epi32(w[l][i & 3], k);
      cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], wk);                         /* now the ABEF */
      abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], _mm_shuffle_epi32(wk, 0x0e)); /* ABEF again */
    }
  }
  for (int l = 0; l < NI_LANES; l++) {
    abef[l] = _mm_add_epi32(abef[l], abef0[l]);
    cdgh[l] = _mm_add_epi32(cdgh[l], cdgh0[l]);
  }
}

/* The SHA-256 of each of the two inputs (`length` bytes each) into out, 32 bytes each. */
__attribute__((target(NI_TARGET))) static void sha256_ni_x2(const uint8_t *const in[NI_LANES], size_t length,
                                                            uint8_t *out) {
  __m128i abef[NI_LANES], cdgh[NI_LANES];
  const __m128i badc = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&ROUND_IV[0]), 0xb1);
  const __m128i hgfe = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&ROUND_IV[4]), 0x1b);
  for (int l = 0; l < NI_LANES; l++) {
    abef[l] = _mm_alignr_epi8(badc, hgfe, 8);
    cdgh[l] = _mm_blend_epi16(hgfe, badc, 0xf0);
  }
  const size_t full = length / 64;
  for (size_t b = 0; b < full; b++) sha256_ni_block(abef, cdgh, in, 64 * b);
  /* The rest, the 0x80 byte and the length in bits: one block, or two when the length does not fit in the first. */
  const size_t rest = length - 64 * full, blocks = rest < 56 ? 1 : 2;
  uint8_t tail[NI_LANES][128];
  const uint8_t *tails[NI_LANES];
  for (int l = 0; l < NI_LANES; l++) {
    memset(tail[l], 0, sizeof tail[l]);
    memcpy(tail[l], in[l] + 64 * full, rest);
    tail[l][rest] = 0x80;
    for (int i = 0; i < 8; i++) tail[l][64 * blocks - 1 - i] = (uint8_t)(((uint64_t)length * 8) >> (8 * i));
    tails[l] = tail[l];
  }
  for (size_t b = 0; b < blocks; b++) sha256_ni_block(abef, cdgh, tails, 64 * b);
  const __m128i swap = NI_BIG_ENDIAN;
  for (int l = 0; l < NI_LANES; l++) {
    const __m128i ab_ef = _mm_shuffle_epi32(abef[l], 0x1b), gh_cd = _mm_shuffle_epi32(cdgh[l], 0xb1); /* A,B,E,F */
    _mm_storeu_si128((__m128i *)(out + 32 * l), _mm_shuffle_epi8(_mm_blend_epi16(ab_ef, gh_cd, 0xf0), swap));
    _mm_storeu_si128((__m128i *)(out + 32 * l + 16), _mm_shuffle_epi8(_mm_alignr_epi8(gh_cd, ab_ef, 8), swap));
  }
}
