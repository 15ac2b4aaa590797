/*
 * net_impl.h - the network code, written once for a floating type and an
 * instruction set.  Included by the kern_*.c files (one per ISA, each
 * compiled with its own flags), once per type, after defining
 *   T        the element type
 *   SFX      the name suffix, e.g. _avx2_f32
 *   GEMM_FN  the packed product of that ISA and type (see gemm/gemm.h)
 *   EXP EXPM1 LOG LOG1P TANH ERF ERFC SQRT FABS   libm names for T
 *   VEXP     exp used by sigmoid, softmax and gelu (libm's in the
 *            reference build; a branch-free polynomial the compiler can
 *            vectorise in the SIMD builds, see vmath.h)
 *   VEXP64   the same choice for the double exp of the cross-entropy
 *   VTANH VERFC  tanh and erfc for the tanh and gelu activations, chosen
 *            the same way
 * and ends by defining the kernel-table entries FN(predict), FN(forward),
 * FN(backward), FN(update), FN(train), FN(matmul), FN(cal_chain).
 *
 * The pieces, in the order a reader (and the compiler) meets them:
 *   net/common.h    macros shared by every inclusion (FN, RUN_TEAM, MULADD)
 *   gemm/product.h  the layer product: the kernel's GEMM, alone or by a team
 *   net/optim.h     the optimizer updates over the flat buffers
 *   net/layers.h    each layer's forward and backward side by side:
 *                   activation, loss, dense, dropout
 *   net/batch.h     the general batch path: forward and backward passes
 *   net/predict.h   predict's bodies (row blocks; a few rows by columns)
 *   net/team.h      what the team choice measures (calibrate.c)
 *   net/tiny.h      the tiny-network path: samples side by side in lanes
 *   net/train.h     the training batch loop (gather, backward, update)
 *   net/online.h    online learning on the tiny path, one sample at a time
 *   net/entry.h     the kernel-table entry points: checks, team, run
 *
 * Functions named *_body contain orphaned OpenMP work-sharing loops: every
 * thread of the enclosing parallel region calls them, or a single thread
 * does when there is no region.  Each loop gives each thread disjoint
 * outputs, and every sum over samples runs in sample order, so results do
 * not depend on the number of threads.
 */
#ifndef BPCORE_NET_IMPL_INCLUDES
#define BPCORE_NET_IMPL_INCLUDES
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "gemm/gemm.h"
#include "net/common.h"
#endif

#include "gemm/product.h"
#include "net/optim.h"
#include "net/layers.h"
#include "net/batch.h"
#include "net/predict.h"
#include "net/team.h"
#include "net/tiny.h"
#include "net/train.h"
#include "net/online.h"
#include "net/entry.h"
