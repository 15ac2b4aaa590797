/*
 * dispatch.c - choose the kernel table once, from what the CPU and the OS
 * support (GCC/Clang's __builtin_cpu_supports checks both), unless the
 * environment variable BPCORE_KERNEL=ref|avx2|avx512 asks for one.  A kernel
 * the machine cannot run (or this build lacks) is never chosen, nor is an
 * unknown name: the best available one is, and bp_kernel_request says so
 * (the Python layer refuses to load then).
 */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static const kernel_table *chosen = &kernel_table_ref;

static int
cpu_has(const char *isa)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (strcmp(isa, "avx2") == 0) {
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (strcmp(isa, "avx512") == 0) {
#ifdef BPCORE_AVX512_ON_AVX2
        /* testing aid: that table was compiled for AVX2 */
        return __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#else
        return __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("fma");
#endif
    }
#else
    (void)isa;
#endif
    return 0;
}



/* What became of BPCORE_KERNEL (bp_kernel_request). */
static int request = BP_KERNEL_DEFAULT;

void
kernels_choose(void)
{
    const char *want = getenv("BPCORE_KERNEL");
    const kernel_table *best = &kernel_table_ref;
#ifdef BPCORE_HAVE_AVX2
    if (cpu_has("avx2")) {
        best = &kernel_table_avx2;
    }
#endif
#ifdef BPCORE_HAVE_AVX512
    if (cpu_has("avx512")) {
        best = &kernel_table_avx512;
    }
#endif
    chosen = best;
    request = BP_KERNEL_DEFAULT;
    if (want == NULL || want[0] == '\0') {
        return;
    }
    if (strcmp(want, "ref") == 0) {
        chosen = &kernel_table_ref;
        request = BP_KERNEL_AS_ASKED;
    } else if (strcmp(want, "avx2") == 0) {
        request = BP_KERNEL_UNAVAILABLE;
#ifdef BPCORE_HAVE_AVX2
        if (cpu_has("avx2")) {
            chosen = &kernel_table_avx2;
            request = BP_KERNEL_AS_ASKED;
        }
#endif
    } else if (strcmp(want, "avx512") == 0) {
        request = BP_KERNEL_UNAVAILABLE;
#ifdef BPCORE_HAVE_AVX512
        if (cpu_has("avx512")) {
            chosen = &kernel_table_avx512;
            request = BP_KERNEL_AS_ASKED;
        }
#endif
    } else {
        request = BP_KERNEL_UNKNOWN;
    }
}

int
bp_kernel_request(void)
{
    return request;
}

const kernel_table *
kernels(void)
{
    return chosen;
}
