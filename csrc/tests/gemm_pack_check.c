/*
 * gemm_pack_check.c - the packed product gives the same bits whether A and B
 * are stored as they are or transposed (x^T delta and delta W^T in
 * training), over shapes around the tile and block sizes: the packing
 * paths must build the same panels.  Built and run by
 * tests/test_gemm_pack.py for each tile the host can run:
 *   cc -O2 -mavx512f -mfma -ffp-contract=fast -DVL=16 -DMR=14 -DNR=32 \
 *      -Icsrc/src csrc/tests/gemm_pack_check.c
 * (-DTT=double for the double tiles).  Exits 1 on a difference.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "gemm/gemm.h"
#ifndef TT
#define TT float
#endif
#define T TT
#define NAME gx
#include "gemm/gemm_simd.h"
int main(){
  int bad=0, cases=0;
  T *s=aligned_alloc(64,(GEMM_SCRATCH_ELEMS+64)*sizeof(T));
  int64_t sizes[]={1,3,7,8,9,15,16,17,31,32,33,63,100,255,256,257,300,513,1030};
  for(int a=0;a<19;a+=2) for(int b=0;b<19;b++) for(int c=0;c<19;c+=3){
    int64_t m=sizes[a],n=sizes[b],k=sizes[c];
    T *A=malloc(m*k*sizeof(T)),*At=malloc(m*k*sizeof(T)),*B=malloc(k*n*sizeof(T)),*Bt=malloc(k*n*sizeof(T)),*C1=malloc(m*n*sizeof(T)),*C2=malloc(m*n*sizeof(T));
    for(int64_t i=0;i<m*k;i++)A[i]=(T)((i*37%101)-50)/7;
    for(int64_t i=0;i<m;i++)for(int64_t p=0;p<k;p++)At[p*m+i]=A[i*k+p];
    for(int64_t p=0;p<k;p++)for(int64_t j=0;j<n;j++){B[p*n+j]=(T)(((p*n+j)*53%97)-48)/9; Bt[j*k+p]=B[p*n+j];}
    gx(C1,n,A,k,1,B,n,1,m,n,k,0,s); gx(C2,n,A,k,1,Bt,1,k,m,n,k,0,s);
    cases++; if(memcmp(C1,C2,m*n*sizeof(T))){bad++; printf("diff B^T m%ld n%ld k%ld\n",m,n,k);}
    gx(C2,n,At,1,m,B,n,1,m,n,k,0,s);
    cases++; if(memcmp(C1,C2,m*n*sizeof(T))){bad++; printf("diff A^T m%ld n%ld k%ld\n",m,n,k);}
    free(A);free(At);free(B);free(Bt);free(C1);free(C2);
  }
  printf("%d cases, %d differ\n",cases,bad); return bad!=0;
}
