/*
 * status.c - status messages, build configuration, the one-time
 * initialisation (kernel choice, fork detection) and thread defaults.
 * Layout and workspace sizes are in layout.c, the finite scans in
 * finite.c.
 */
#include <stdlib.h>

#ifndef _WIN32
#include <pthread.h>
#endif

#include "internal.h"
#include "kernels.h"

const char *
bp_status_string(int status)
{
    switch (status) {
    case BP_OK:
        return "success";
    case BP_EARG:
        return "invalid argument (NULL pointer or unknown code)";
    case BP_ESHAPE:
        return "invalid size or shape";
    case BP_ENOMEM:
        return "workspace too small or out of memory";
    case BP_EOVERFLOW:
        return "size computation overflows";
    case BP_ENONFINITE:
        return "the loss is not finite (NaN or infinity)";
    case BP_EINTERNAL:
        return "internal error";
    default:
        return "unknown status code";
    }
}

/* Written once by bp_init (under the GIL in Python, or once by a C host). */
static int initialised = 0;
static volatile int forked = 0;

#ifndef _WIN32
static void
mark_forked_child(void)
{
    forked = 1;
}
#endif

void
bp_init(void)
{
    if (initialised) {
        return;
    }
    initialised = 1;
    kernels_choose();
#ifndef _WIN32
    pthread_atfork(NULL, NULL, mark_forked_child);
#endif
}

int
in_forked_child(void)
{
    return forked;
}

const char *
bp_config_kernel(void)
{
    return kernels()->name;
}

const char *
bp_config_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc";
#else
    return "unknown";
#endif
}

int
bp_config_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int
bp_default_threads(void)
{
#ifdef _OPENMP
    if (!forked) {
        return omp_get_max_threads();
    }
#endif
    return 1;
}

int
bp_omp_places(void)
{
#if defined(_OPENMP) && _OPENMP >= 201511
    return omp_get_num_places();
#else
    return 0;
#endif
}

int
resolve_threads(int n_threads)
{
#ifdef _OPENMP
    if (n_threads < 1 || forked) {
        return 1;
    }
    return n_threads;
#else
    (void)n_threads;
    return 1;
#endif
}
