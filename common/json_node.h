/* json_node.h - the tree node behind json.h's opaque json_value, shared by
 * the parser (json.c) and the Python repr (json_repr.c); nothing else
 * includes it. */
#ifndef SMQ_JSON_NODE_H
#define SMQ_JSON_NODE_H

#include <stdint.h>

#include "json.h"

enum number_form { NUM_FLOAT, NUM_INT64, NUM_BIGINT };

struct json_value {
    uint8_t type; /* json_type */
    uint8_t form; /* JSON_NUMBER: number_form */
    uint32_t len; /* string/number text bytes; array elements; object members */
    union {
        const char *str;   /* JSON_STRING, JSON_NUMBER: NUL-terminated, in the pool */
        json_value *items; /* JSON_ARRAY: len values; JSON_OBJECT: 2*len, key then value */
    } p;
    union {
        double d;    /* NUM_FLOAT, NUM_BIGINT */
        int64_t i;   /* NUM_INT64 */
        int b;       /* JSON_BOOL */
        uint32_t at; /* JSON_STRING: offset of its opening quote, for duplicate-key errors */
    } u;
};

/* json.h promises 24 bytes per node (on 64-bit hosts). */
_Static_assert(sizeof(void *) != 8 || sizeof(json_value) == 24, "json_value grew");

#endif
