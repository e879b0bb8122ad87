/*
 * The body of one 8-lane SHA-256 kernel (FIPS 180-4): eight equal-length
 * inputs hashed side by side, one input per 32-bit lane of a 256-bit vector.
 * sha256_multi.c includes this file once per instruction set, after defining
 * X8_LANES (8), KERNEL (the function's name), TARGET (its target attribute) and the vector
 * operations ROR, XOR3, CH and MAJ for that set.
 */

#define PASTE2(a, b) a##b
#define PASTE(a, b) PASTE2(a, b)

/* One 64-byte block of each lane, at `offset` into lane i's input `in[i]`. */
__attribute__((target(TARGET))) static void PASTE(KERNEL, _block)(__m256i s[8], const uint8_t *const in[X8_LANES],
                                                                  size_t offset) {
  const __m256i swap = _mm256_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9,
                                       10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
  const __m256i low = _mm256_set_epi64x((long long)(intptr_t)(in[3] + offset), (long long)(intptr_t)(in[2] + offset),
                                        (long long)(intptr_t)(in[1] + offset), (long long)(intptr_t)(in[0] + offset));
  const __m256i high = _mm256_set_epi64x((long long)(intptr_t)(in[7] + offset), (long long)(intptr_t)(in[6] + offset),
                                         (long long)(intptr_t)(in[5] + offset), (long long)(intptr_t)(in[4] + offset));
  __m256i w[16];
  /* Word t of every lane (a gather from each lane's address), then big-endian to native. */
  for (int t = 0; t < 16; t++) w[t] = _mm256_shuffle_epi8(GATHER(low, high, 4 * t), swap);
  __m256i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
  for (int t = 0; t < 64; t++) {
    if (t >= 16) { /* the message schedule, kept in a ring of 16 words */
      const __m256i w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
      const __m256i s0 = XOR3(ROR(w15, 7), ROR(w15, 18), _mm256_srli_epi32(w15, 3));
      const __m256i s1 = XOR3(ROR(w2, 17), ROR(w2, 19), _mm256_srli_epi32(w2, 10));
      w[t & 15] = _mm256_add_epi32(_mm256_add_epi32(w[t & 15], s0), _mm256_add_epi32(w[(t - 7) & 15], s1));
    }
    const __m256i k = _mm256_set1_epi32((int)ROUND_K[t]);
    const __m256i t1 = _mm256_add_epi32(_mm256_add_epi32(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))),
                                        _mm256_add_epi32(CH(e, f, g), _mm256_add_epi32(k, w[t & 15])));
    const __m256i t2 = _mm256_add_epi32(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), MAJ(a, b, c));
    h = g;
    g = f;
    f = e;
    e = _mm256_add_epi32(d, t1);
    d = c;
    c = b;
    b = a;
    a = _mm256_add_epi32(t1, t2);
  }
  s[0] = _mm256_add_epi32(s[0], a);
  s[1] = _mm256_add_epi32(s[1], b);
  s[2] = _mm256_add_epi32(s[2], c);
  s[3] = _mm256_add_epi32(s[3], d);
  s[4] = _mm256_add_epi32(s[4], e);
  s[5] = _mm256_add_epi32(s[5], f);
  s[6] = _mm256_add_epi32(s[6], g);
  s[7] = _mm256_add_epi32(s[7], h);
}

/* SHA-256 of in[0..X8_LANES-1], each `length` bytes long, into out (X8_LANES x 32 bytes). */
__attribute__((target(TARGET))) static void KERNEL(const uint8_t *const in[X8_LANES], size_t length, uint8_t *out) {
  __m256i s[8];
  for (int i = 0; i < 8; i++) s[i] = _mm256_set1_epi32((int)ROUND_IV[i]);
  const size_t whole = length - length % 64;
  for (size_t at = 0; at < whole; at += 64) PASTE(KERNEL, _block)(s, in, at);
  /* The padding (FIPS 180-4, 5.1.1): 0x80, zeros, the length in bits, 64 bits big-endian; one block or two. */
  const size_t tail = length - whole, padded = tail < 56 ? 64 : 128;
  uint8_t last[X8_LANES][128];
  const uint8_t *lastIn[X8_LANES];
  for (int lane = 0; lane < X8_LANES; lane++) {
    memset(last[lane], 0, padded);
    memcpy(last[lane], in[lane] + whole, tail);
    last[lane][tail] = 0x80;
    for (int i = 0; i < 8; i++) last[lane][padded - 1 - i] = (uint8_t)(((uint64_t)length * 8) >> (8 * i));
    lastIn[lane] = last[lane];
  }
  for (size_t at = 0; at < padded; at += 64) PASTE(KERNEL, _block)(s, lastIn, at);
  uint32_t words[8][X8_LANES]; /* [state word][lane] */
  for (int i = 0; i < 8; i++) _mm256_storeu_si256((__m256i *)words[i], s[i]);
  for (int lane = 0; lane < X8_LANES; lane++) {
    for (int i = 0; i < 8; i++) {
      const uint32_t v = words[i][lane];
      uint8_t *o = out + 32 * lane + 4 * i;
      o[0] = (uint8_t)(v >> 24), o[1] = (uint8_t)(v >> 16), o[2] = (uint8_t)(v >> 8), o[3] = (uint8_t)v;
    }
  }
}

#undef PASTE
#undef PASTE2
