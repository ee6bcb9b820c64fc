#include "kv_pages.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int kv_pool_init(kv_pool *p, uint32_t n_pages, uint32_t page_size)
{
    memset(p, 0, sizeof *p);
    p->refs = calloc(n_pages ? n_pages : 1, sizeof *p->refs);
    p->free_list = malloc((n_pages ? n_pages : 1) * sizeof *p->free_list);
    if (!p->refs || !p->free_list) {
        kv_pool_free(p);
        return -1;
    }
    p->n_pages = n_pages;
    p->page_size = page_size;
    /* Lowest page numbers on top, so a fresh pool hands out 0, 1, 2, ... */
    for (uint32_t i = 0; i < n_pages; i++)
        p->free_list[i] = n_pages - 1 - i;
    p->n_free = n_pages;
    return 0;
}

void kv_pool_free(kv_pool *p)
{
    free(p->refs);
    free(p->free_list);
    memset(p, 0, sizeof *p);
}

int64_t kv_page_alloc(kv_pool *p)
{
    if (p->n_free == 0)
        return -1;
    uint32_t page = p->free_list[--p->n_free];
    assert(p->refs[page] == 0);
    p->refs[page] = 1;
    return page;
}

void kv_page_retain(kv_pool *p, uint32_t page)
{
    assert(page < p->n_pages && p->refs[page] > 0);
    p->refs[page]++;
}

void kv_page_release(kv_pool *p, uint32_t page)
{
    assert(page < p->n_pages && p->refs[page] > 0);
    if (--p->refs[page] == 0)
        p->free_list[p->n_free++] = page;
}
