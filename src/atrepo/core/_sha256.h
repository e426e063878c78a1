/*
 * SHA-256 (FIPS 180-4) for atrepo's C extensions (_carindex, _mstnode), in one place.
 *
 * Both hash inside loops where calling back into hashlib would cost more than
 * the rest of the work (block digests while indexing a CAR, key layers while
 * parsing MST nodes). The compression runs on the x86 SHA extensions when the
 * CPU has them (sha256_detect(), once at module import), else on the plain
 * implementation; both are tested against hashlib through each module's
 * _digest test hook. Everything here is static: each extension gets its copy.
 */

#ifndef ATREPO_SHA256_H
#define ATREPO_SHA256_H

#include <stdint.h>
#include <string.h>

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t SHA256_H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define SHA256_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_blocks_portable(uint32_t h[8], const unsigned char *p, size_t count) {
    while (count--) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
                   (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = SHA256_ROTR(w[i - 15], 7) ^ SHA256_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = SHA256_ROTR(w[i - 2], 17) ^ SHA256_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = k + (SHA256_ROTR(e, 6) ^ SHA256_ROTR(e, 11) ^ SHA256_ROTR(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i];
            uint32_t t2 = (SHA256_ROTR(a, 2) ^ SHA256_ROTR(a, 13) ^ SHA256_ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            k = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += k;
        p += 64;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SHA256_HAVE_SHANI 1

/*
 * The same compression on the SHA extensions. The state lives as the (ABEF,
 * CDGH) pairs sha256rnds2 works on; each step of four rounds adds four
 * schedule words to four constants, and words 16..63 come from
 * sha256msg1/msg2 over the previous sixteen.
 */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_blocks_shani(uint32_t h[8], const unsigned char *p,
                                                                      size_t count) {
    const __m128i order = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* C D A B */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* E F G H */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);                                         /* A B E F */
    s1 = _mm_blend_epi16(s1, t, 0xF0);                                              /* C D G H */
    while (count--) {
        __m128i save0 = s0, save1 = s1, w[4];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), order);
        for (int r = 0; r < 16; r++) {
            if (r >= 4) {
                __m128i m = _mm_sha256msg1_epu32(w[r & 3], w[(r + 1) & 3]);
                m = _mm_add_epi32(m, _mm_alignr_epi8(w[(r + 3) & 3], w[(r + 2) & 3], 4));
                w[r & 3] = _mm_sha256msg2_epu32(m, w[(r + 3) & 3]);
            }
            __m128i msg = _mm_add_epi32(w[r & 3], _mm_loadu_si128((const __m128i *)&SHA256_K[4 * r]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(msg, 0x0E));
        }
        s0 = _mm_add_epi32(s0, save0);
        s1 = _mm_add_epi32(s1, save1);
        p += 64;
    }
    t = _mm_shuffle_epi32(s0, 0x1B);  /* F E B A */
    s1 = _mm_shuffle_epi32(s1, 0xB1); /* D C H G */
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, s1, 0xF0)); /* D C B A */
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, t, 8));    /* H G F E */
}
#endif

static int sha256_have_shani = 0;

static inline void sha256_detect(void) {
#ifdef SHA256_HAVE_SHANI
    __builtin_cpu_init();
    sha256_have_shani = __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1") &&
                 __builtin_cpu_supports("ssse3");
#endif
}

static inline void sha256_blocks(uint32_t h[8], const unsigned char *p, size_t count) {
#ifdef SHA256_HAVE_SHANI
    if (sha256_have_shani) {
        sha256_blocks_shani(h, p, count);
        return;
    }
#endif
    sha256_blocks_portable(h, p, count);
}

/* The digest of msg[0:n] as eight words (the state after the padded last block). */
static inline void sha256_words(const unsigned char *msg, size_t n, uint32_t h[8]) {
    memcpy(h, SHA256_H0, sizeof SHA256_H0);
    size_t full = n / 64;
    sha256_blocks(h, msg, full);
    unsigned char last[128];
    size_t rest = n - 64 * full;
    memcpy(last, msg + 64 * full, rest);
    last[rest] = 0x80;
    size_t tail = rest < 56 ? 64 : 128;
    memset(last + rest + 1, 0, tail - rest - 1);
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++) last[tail - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha256_blocks(h, last, tail / 64);
}

/* The digest of msg[0:n] as its 32 bytes (big-endian words). */
static inline void sha256_digest(const unsigned char *msg, size_t n, unsigned char out[32]) {
    uint32_t h[8];
    sha256_words(msg, n, h);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

#endif /* ATREPO_SHA256_H */
