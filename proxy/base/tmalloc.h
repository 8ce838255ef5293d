/*
 * tmalloc.h - per-thread recycling of the blocks a request makes and frees.
 *
 * A request allocates a few dozen blocks (its stream, header lists and
 * their 2 KiB blocks, body buffers and their chains, timers, nghttp2's
 * stream state on both sides) and frees them when it ends. glibc's
 * per-thread cache keeps 7 chunks of a size and none above 1,032 bytes, so
 * with a few hundred requests in flight most of them went through the
 * arena's bins and lock: about a tenth of picket's instructions per small
 * request (callgrind). Here each thread keeps freed blocks in size classes
 * (16-byte steps to 256 bytes, 64-byte steps to 1 KiB, then powers of
 * two from 2 to 128 KiB). A class keeps up to a cap (4,096 blocks up to
 * 1 KiB; 64 to 1 per class above): what the requests in flight make and
 * free from one loop turn to the next. px_tmalloc_decay(), called about
 * once a second by a worker, gives back what stayed unused since the last
 * call, down to a floor (256 blocks up to 1 KiB), so what a thread keeps
 * above the floor is what its requests held a moment ago; the rest goes
 * back when the thread ends. Larger blocks, and blocks past the cap, go to
 * malloc and free.
 *
 * Every block carries a 16-byte header, so memory from px_tmalloc() and its
 * kin must go back through px_tfree(), never free(), and the reverse. Used
 * for libevent (event_set_mem_functions), nghttp2 (h2_mem.c) and picket's
 * per-request objects. Under AddressSanitizer a block waiting in a class
 * is poisoned, so a use after free is still caught.
 */
#ifndef PX_TMALLOC_H
#define PX_TMALLOC_H

#include <stddef.h>

void *px_tmalloc(size_t n);
void *px_tcalloc(size_t n, size_t size);
void *px_trealloc(void *p, size_t n);
void px_tfree(void *p);
/* n zeroed bytes (px_tmalloc + memset). */
void *px_tzalloc(size_t n);
/* n zeroed bytes in a mapping of their own, so a page never written is
 * never resident (for buffers that are large and mostly unused, such as an
 * HTTP/2 session's frame buffer). Freed with px_tfree(); px_trealloc()
 * moves it to an ordinary block. */
void *px_tmalloc_paged(size_t n);
/* The system's page size (sysconf, asked once; 4096 if it will not say). */
size_t px_page_size(void);
/* The size a block was asked for (p from any function here, not NULL). */
size_t px_tsize(const void *p);
/* Gives the blocks this thread keeps back to malloc (tests that count
 * malloc calls; a thread about to idle). */
void px_tmalloc_trim(void);
/* Gives back to malloc, class by class, the blocks this thread kept that
 * no allocation took since the last call (down to the class's floor). */
void px_tmalloc_decay(void);
/* How many free blocks this thread keeps in the class of an n-byte block
 * (0 for sizes past the classes). */
size_t px_tmalloc_kept(size_t n);

/* Raw blocks: malloc's own blocks, no header, for a library that frees
 * with free()-like hooks only (OpenSSL's CRYPTO_set_mem_functions). A
 * request of PX_RAW_MIN..PX_RAW_BYTES bytes (OpenSSL's TLS record
 * buffers: 16,712 bytes read, 16,472-16,560 write, made and freed per
 * record under SSL_MODE_RELEASE_BUFFERS) gets a block of PX_RAW_BYTES from
 * a per-thread stack (at most 64 kept, decayed to 8 like the classes);
 * everything else goes straight to malloc. px_rawfree() tells the class's
 * blocks by malloc_usable_size(). Never mix with px_tmalloc's blocks. */
#define PX_RAW_MIN 16384
#define PX_RAW_BYTES 17408
void *px_rawmalloc(size_t n);
void *px_rawrealloc(void *b, size_t n);
void px_rawfree(void *b);
/* How many raw blocks this thread keeps. */
size_t px_rawmalloc_kept(void);

#endif
