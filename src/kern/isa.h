/* isa.h -- one library, several instruction-set paths for the hot kernels.
 *
 * A kernel file listed in the Makefile's KSRC is compiled once per path: as
 * is (the portable path, baseline flags) and, on x86-64, again with AVX2+FMA
 * flags and -DLINA_ISA_SUFFIX=_avx2 and with AVX-512 flags and
 * -DLINA_ISA_SUFFIX=_avx512. In such a file:
 *   - each entry point is defined as `int LINA_KFN(lina_x_fwd)(...)`, which
 *     names it lina_x_fwd_portable / _avx2 / _avx512 in the three objects;
 *   - everything that must exist once (op tables, helpers that are not hot)
 *     sits inside `#if LINA_ISA_PRIMARY`;
 *   - the public name is defined once, inside `#if LINA_ISA_PRIMARY`, by
 *     LINA_ISA_DISPATCH / LINA_ISA_DISPATCH_VOID: a switch on lina_isa_id(),
 *     the path chosen once at start-up (kern/isa.c).
 * Intrinsics stay behind the compiler's own macros (__AVX512F__, __AVX2__ &&
 * __FMA__, __ARM_NEON), with a plain C version for everything else. */
#ifndef LINA_ISA_H
#define LINA_ISA_H

enum { LINA_ISA_PORTABLE = 0, LINA_ISA_AVX2 = 1, LINA_ISA_AVX512 = 2, LINA_ISA_NEON = 3 };

/* The active path (LINA_ISA_*), chosen once: the best the CPU supports, or
 * the one the environment variable LINA_ISA names. */
int lina_isa_id(void);

#ifndef LINA_ISA_SUFFIX
#define LINA_ISA_SUFFIX _portable
#define LINA_ISA_PRIMARY 1
#else
#define LINA_ISA_PRIMARY 0
#endif

#define LINA_ISA_CAT_(a, b) a##b
#define LINA_ISA_CAT(a, b) LINA_ISA_CAT_(a, b)
#define LINA_KFN(name) LINA_ISA_CAT(name, LINA_ISA_SUFFIX)

#if defined(__x86_64__)
#define LINA_ISA_X86 1
#define LINA_ISA_DISPATCH(ret, name, params, args)        \
    ret name##_portable params;                           \
    ret name##_avx2 params;                               \
    ret name##_avx512 params;                             \
    ret name params                                       \
    {                                                     \
        switch (lina_isa_id()) {                          \
        case LINA_ISA_AVX512:                             \
            return name##_avx512 args;                    \
        case LINA_ISA_AVX2:                               \
            return name##_avx2 args;                      \
        default:                                          \
            return name##_portable args;                  \
        }                                                 \
    }
#define LINA_ISA_DISPATCH_VOID(name, params, args)        \
    void name##_portable params;                          \
    void name##_avx2 params;                              \
    void name##_avx512 params;                            \
    void name params                                      \
    {                                                     \
        switch (lina_isa_id()) {                          \
        case LINA_ISA_AVX512:                             \
            name##_avx512 args;                           \
            break;                                        \
        case LINA_ISA_AVX2:                               \
            name##_avx2 args;                             \
            break;                                        \
        default:                                          \
            name##_portable args;                         \
        }                                                 \
    }
#elif defined(__aarch64__)
#define LINA_ISA_X86 0
#define LINA_ISA_DISPATCH(ret, name, params, args)        \
    ret name##_portable params;                           \
    ret name##_neon params;                               \
    ret name params                                       \
    {                                                     \
        if (lina_isa_id() == LINA_ISA_NEON) {             \
            return name##_neon args;                      \
        }                                                 \
        return name##_portable args;                      \
    }
#define LINA_ISA_DISPATCH_VOID(name, params, args)        \
    void name##_portable params;                          \
    void name##_neon params;                              \
    void name params                                      \
    {                                                     \
        if (lina_isa_id() == LINA_ISA_NEON) {             \
            name##_neon args;                             \
        } else {                                          \
            name##_portable args;                         \
        }                                                 \
    }
#else
#define LINA_ISA_X86 0
#define LINA_ISA_DISPATCH(ret, name, params, args) \
    ret name##_portable params;                    \
    ret name params { return name##_portable args; }
#define LINA_ISA_DISPATCH_VOID(name, params, args) \
    void name##_portable params;                   \
    void name params { name##_portable args; }
#endif

/* Ask for the n floats at p ahead of their use: the cache lines they cover.
 * For rows read a step at a time with a stride of a few kilobytes (a head's
 * rows of [B,T,H,D] tensors), which the hardware prefetchers, confined to a
 * page, do not follow. LOC is __builtin_prefetch's locality (a literal). */
#if defined(__GNUC__)
#define LINA_PREFETCH_ROW(p, n, LOC)                                             \
    do {                                                                         \
        const char *c_ = (const char *)(p);                                      \
        const int nb_ = (n) * (int)sizeof(float);                                \
        for (int off_ = 0; off_ < nb_; off_ += 64) {                             \
            __builtin_prefetch(c_ + off_, 0, LOC);                               \
        }                                                                        \
        __builtin_prefetch(c_ + nb_ - 1, 0, LOC);                                \
    } while (0)
#else
#define LINA_PREFETCH_ROW(p, n, LOC) ((void)(p), (void)(n))
#endif

/* into L1: rows the next steps of a compute-heavy loop read */
static inline void lina_prefetch_floats(const float *p, int n)
{
    LINA_PREFETCH_ROW(p, n, 3);
}

/* into the outer caches (prefetcht2): for passes that stream rows with little
 * arithmetic between them, where the rows asked for well ahead would otherwise
 * evict the L1 lines in use (the recurrent forward's pass that scales q and k
 * ran 1.15x faster with it) */
static inline void lina_prefetch_floats_l2(const float *p, int n)
{
    LINA_PREFETCH_ROW(p, n, 1);
}

/* One vector type for code written once for both AVX paths: lina_vf holds
 * LINA_VL floats; LINA_VFOLD adds its halves down to one __m256 (8 lanes). */
#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 lina_vf;
#define LINA_VL 16
#define LINA_VLD _mm512_loadu_ps
#define LINA_VST _mm512_storeu_ps
#define LINA_VMUL _mm512_mul_ps
#define LINA_VADD _mm512_add_ps
#define LINA_VSUB _mm512_sub_ps
#define LINA_VDIV _mm512_div_ps
#define LINA_VMAX _mm512_max_ps
#define LINA_VFMA _mm512_fmadd_ps
#define LINA_VFNMA _mm512_fnmadd_ps
#define LINA_VSET1 _mm512_set1_ps
#define LINA_VZERO _mm512_setzero_ps
#define LINA_VFOLD(x) \
    _mm256_add_ps(_mm512_castps512_ps256(x), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)))
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 lina_vf;
#define LINA_VL 8
#define LINA_VLD _mm256_loadu_ps
#define LINA_VST _mm256_storeu_ps
#define LINA_VMUL _mm256_mul_ps
#define LINA_VADD _mm256_add_ps
#define LINA_VSUB _mm256_sub_ps
#define LINA_VDIV _mm256_div_ps
#define LINA_VMAX _mm256_max_ps
#define LINA_VFMA _mm256_fmadd_ps
#define LINA_VFNMA _mm256_fnmadd_ps
#define LINA_VSET1 _mm256_set1_ps
#define LINA_VZERO _mm256_setzero_ps
#define LINA_VFOLD(x) (x)
#elif defined(LINA_ISA_NEON_PATH) && defined(__aarch64__)
/* AArch64 (the neon path): a lina_vf is a pair of 128-bit registers, 8 floats,
 * so that the code written for AVX2's 16 registers of 8 floats runs on
 * AArch64's 32 registers of 4 with the same blocking (every tile, row block and
 * register budget chosen for LINA_VL = 8 holds). */
#include <arm_neon.h>
typedef struct {
    float32x4_t l, h;
} lina_vf;
#define LINA_VL 8
static inline lina_vf lina_nv_ld(const float *p)
{
    return (lina_vf){vld1q_f32(p), vld1q_f32(p + 4)};
}
static inline void lina_nv_st(float *p, lina_vf x)
{
    vst1q_f32(p, x.l);
    vst1q_f32(p + 4, x.h);
}
#define LINA_NV_OP2(name, op)                                  \
    static inline lina_vf name(lina_vf a, lina_vf b)           \
    {                                                          \
        return (lina_vf){op(a.l, b.l), op(a.h, b.h)};          \
    }
LINA_NV_OP2(lina_nv_mul, vmulq_f32)
LINA_NV_OP2(lina_nv_add, vaddq_f32)
LINA_NV_OP2(lina_nv_sub, vsubq_f32)
LINA_NV_OP2(lina_nv_div, vdivq_f32)
LINA_NV_OP2(lina_nv_max, vmaxq_f32)
/* a b + c and c - a b, fused */
static inline lina_vf lina_nv_fma(lina_vf a, lina_vf b, lina_vf c)
{
    return (lina_vf){vfmaq_f32(c.l, a.l, b.l), vfmaq_f32(c.h, a.h, b.h)};
}
static inline lina_vf lina_nv_fnma(lina_vf a, lina_vf b, lina_vf c)
{
    return (lina_vf){vfmsq_f32(c.l, a.l, b.l), vfmsq_f32(c.h, a.h, b.h)};
}
static inline lina_vf lina_nv_set1(float x)
{
    const float32x4_t v = vdupq_n_f32(x);
    return (lina_vf){v, v};
}
#define LINA_VLD lina_nv_ld
#define LINA_VST lina_nv_st
#define LINA_VMUL lina_nv_mul
#define LINA_VADD lina_nv_add
#define LINA_VSUB lina_nv_sub
#define LINA_VDIV lina_nv_div
#define LINA_VMAX lina_nv_max
#define LINA_VFMA lina_nv_fma
#define LINA_VFNMA lina_nv_fnma
#define LINA_VSET1 lina_nv_set1
#define LINA_VZERO() lina_nv_set1(0.0f)
#define LINA_VFOLD(x) (x)
/* a partial vector (no masked loads and stores on neon): the first n (< 8)
 * floats of p, the other lanes `fill`; and the first n lanes of x stored to p */
static inline lina_vf lina_nv_ld_n(const float *p, int n, float fill)
{
    float t[LINA_VL];
    for (int i = 0; i < LINA_VL; i++) {
        t[i] = i < n ? p[i] : fill;
    }
    return lina_nv_ld(t);
}
static inline void lina_nv_st_n(float *p, int n, lina_vf x)
{
    float t[LINA_VL];
    lina_nv_st(t, x);
    for (int i = 0; i < n; i++) {
        p[i] = t[i];
    }
}
#endif

/* LINA_NV_UNROLL before a loop over a kernel's vectors (a few, a literal count):
 * on the neon path GCC unrolls it early, so that an array of lina_vf pairs
 * indexed by it lives in registers (GCC 12 for AArch64 otherwise keeps such
 * arrays in memory and stores every accumulator on each step of the outer
 * loop); nothing on the other paths, whose code is unchanged. */
#if defined(LINA_ISA_NEON_PATH) && defined(__GNUC__) && !defined(__clang__)
#define LINA_NV_UNROLL _Pragma("GCC unroll 16")
#else
#define LINA_NV_UNROLL
#endif

/* lina_v8: 8 floats (what LINA_VFOLD gives), with the same operations, for the
 * row sums of 8 rows at a time (lina_hsum8) on every vector path */
#if defined(__AVX2__) && defined(__FMA__)
typedef __m256 lina_v8;
#define LINA_V8_LD _mm256_loadu_ps
#define LINA_V8_ST _mm256_storeu_ps
#define LINA_V8_ADD _mm256_add_ps
#define LINA_V8_MUL _mm256_mul_ps
#define LINA_V8_FMA _mm256_fmadd_ps
#define LINA_V8_FNMA _mm256_fnmadd_ps
#define LINA_V8_SET1 _mm256_set1_ps
#define LINA_V8_ZERO _mm256_setzero_ps
#elif defined(LINA_VL)
typedef lina_vf lina_v8;
#define LINA_V8_LD LINA_VLD
#define LINA_V8_ST LINA_VST
#define LINA_V8_ADD LINA_VADD
#define LINA_V8_MUL LINA_VMUL
#define LINA_V8_FMA LINA_VFMA
#define LINA_V8_FNMA LINA_VFNMA
#define LINA_V8_SET1 LINA_VSET1
#define LINA_V8_ZERO LINA_VZERO
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* (sum of the lanes of x[0], ..., of x[7]): the row sums of 8 rows at once */
static inline __m256 lina_hsum8(const __m256 *x)
{
    const __m256 t0 = _mm256_hadd_ps(x[0], x[1]), t1 = _mm256_hadd_ps(x[2], x[3]);
    const __m256 t2 = _mm256_hadd_ps(x[4], x[5]), t3 = _mm256_hadd_ps(x[6], x[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
/* the sum of the lanes of x */
static inline float lina_v8_hsum(__m256 x)
{
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
#elif defined(LINA_VL) && defined(__aarch64__)
static inline lina_vf lina_hsum8(const lina_vf *x)
{
    float32x4_t s[8];
    for (int i = 0; i < 8; i++) {
        s[i] = vaddq_f32(x[i].l, x[i].h);
    }
    /* vpaddq: adjacent pairs of a, then of b; twice gives the four sums of 4 vectors */
    const float32x4_t a = vpaddq_f32(vpaddq_f32(s[0], s[1]), vpaddq_f32(s[2], s[3]));
    const float32x4_t b = vpaddq_f32(vpaddq_f32(s[4], s[5]), vpaddq_f32(s[6], s[7]));
    return (lina_vf){a, b};
}
static inline float lina_v8_hsum(lina_vf x)
{
    return vaddvq_f32(vaddq_f32(x.l, x.h));
}
#endif


#endif
