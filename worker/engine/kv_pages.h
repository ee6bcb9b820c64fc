/* kv_pages.h - the KV cache's page pool: which page belongs to whom.
 *
 * Pages hold page_size positions of keys and values for every layer (the
 * backend owns their memory). A page is free, or held by one or more owners:
 * running sequences, and finished ones kept for prefix reuse. Pages shared
 * between owners are full and read-only; a sequence only ever writes into
 * pages it holds alone.
 */
#ifndef SMQ_KV_PAGES_H
#define SMQ_KV_PAGES_H

#include <stdint.h>

typedef struct kv_pool {
    uint32_t n_pages, page_size;
    uint32_t *refs;      /* owners per page */
    uint32_t *free_list; /* stack of free pages */
    uint32_t n_free;
} kv_pool;

int kv_pool_init(kv_pool *p, uint32_t n_pages, uint32_t page_size);
void kv_pool_free(kv_pool *p);
/* A free page with one owner, or -1 when none is free. */
int64_t kv_page_alloc(kv_pool *p);
void kv_page_retain(kv_pool *p, uint32_t page);
void kv_page_release(kv_pool *p, uint32_t page);

#endif
