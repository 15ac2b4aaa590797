#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include "gemm/gemm.h"
#define T float
#ifndef VL
#define VL 16
#define MR 14
#define NR 32
#endif


#define NAME g32
#include "gemm/gemm_simd.h"
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int main(int argc,char**argv){
  int64_t m=256,k=1024,n=1024;
  float *A=aligned_alloc(64,m*k*4),*B=aligned_alloc(64,k*n*4),*C=aligned_alloc(64,m*n*4);
  float *s=aligned_alloc(64,GEMM_SCRATCH_ELEMS*4+256);
  for(int64_t i=0;i<m*k;i++)A[i]=(i%7)*0.1f; for(int64_t i=0;i<k*n;i++)B[i]=(i%5)*0.1f;
  double bn=1e9,bt=1e9,pn=1e9,pt=1e9;
  for(int r=0;r<30;r++){
    double t=now(); g32(C,n,A,k,1,B,n,1,m,n,k,0,s); t=now()-t; if(t<bn)bn=t;
    t=now(); g32(C,n,A,k,1,B,1,k,m,n,k,0,s); t=now()-t; if(t<bt)bt=t;
    t=now(); for(int64_t pc=0;pc<k;pc+=256) pack_b_g32(s,B+pc*n,n,1,256,n); t=now()-t; if(t<pn)pn=t;
    t=now(); for(int64_t pc=0;pc<k;pc+=256) pack_b_g32(s,B+pc,1,k,256,n); t=now()-t; if(t<pt)pt=t;
  }
  double fl=2.0*m*n*k;
  printf("normal %.0f GF/s, transB %.0f GF/s; pack normal %.3f ms, pack trans %.3f ms (product %.3f ms)\n",fl/bn/1e9,fl/bt/1e9,pn*1e3,pt*1e3,bt*1e3);
}
