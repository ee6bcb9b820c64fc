/* json.h - a strict JSON parser (RFC 8259) that builds a read-only tree.
 *
 * json_parse() takes (ptr, len), not a C string, so that a file of JSON lines
 * can be parsed one line at a time. It accepts exactly the RFC's grammar and
 * rejects everything else with "NAME: at byte N: what is wrong" (N counts from
 * 0): invalid UTF-8, lone surrogates in \u escapes, raw control characters in
 * strings, leading zeros, NaN/Infinity, trailing commas, duplicate object
 * keys, anything after the value, nesting deeper than JSON_PARSE_MAX_DEPTH.
 *
 * Memory: the tree is one allocation, sized exactly by a first pass over the
 * input: 24 bytes per value and per key, plus a NUL-terminated copy of every
 * string and number. The worst case, [0,0,0,...], takes 13 bytes per input
 * byte. While parsing, 4 more bytes per array/object and 8 per member of the
 * largest object. Parsing is iterative (no recursion) and linear apart from
 * sorting the keys of large objects to find duplicates.
 *
 * Values are owned by the tree: json_free() the root and every pointer into
 * it is gone. Accessors accept NULL (a missing value) and answer "absent":
 * NULL, 0, or JSON_NULL for json_typeof.
 */
#ifndef SMQ_JSON_H
#define SMQ_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "sbuf.h"

#define JSON_PARSE_MAX_DEPTH 64          /* arrays/objects nest at most this deep */
#define JSON_PARSE_MAX_INPUT 0xFFFFFFFFu /* bytes; counts are stored in 32 bits */

typedef enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;

/* Parses text[0..len) (need not be NUL-terminated). name labels the input in
 * errors ("json" when NULL). NULL with err filled when the text is not JSON. */
json_value *json_parse(const char *text, size_t len, const char *name, smq_err *err);
void json_free(json_value *root);

json_type json_typeof(const json_value *v);
const char *json_type_name(json_type t); /* "null", "boolean", ..., for messages */

/* Object member by key (keys are unique); NULL if absent or v is no object. */
const json_value *json_get(const json_value *obj, const char *key);
/* Elements of an array or members of an object; 0 for anything else. */
size_t json_len(const json_value *v);
/* Array element i, or the value of object member i (in document order). */
const json_value *json_at(const json_value *v, size_t i);
/* Key of object member i (NUL-terminated; *len counts any \u0000 in it). */
const char *json_key_at(const json_value *obj, size_t i, size_t *len);
/* A string's bytes, NUL-terminated, valid UTF-8; it may contain U+0000, so
 * *len (when len is not NULL) is its length. NULL if v is no string. */
const char *json_string(const json_value *v, size_t *len);
int json_boolean(const json_value *v);   /* 1 for true, else 0 */
double json_number(const json_value *v); /* 0 if v is no number; 1e999 is inf */
/* Nonzero when v is a number written without fraction or exponent whose
 * value fits int64_t ("-0" is the integer 0). */
int json_is_integer(const json_value *v);
int64_t json_integer(const json_value *v); /* its value if json_is_integer, else 0 */

/* Python's truth value of the value, as a Jinja template tests it: null,
 * false, 0, 0.0, "", [] and {} are false; everything else is true. */
int json_truthy(const json_value *v);

/* Appends what Python 3 prints for repr() of the value json.loads() gives:
 * dicts in document order ({'a': 1, 'b': [True, None]}), strings in single
 * quotes unless they contain ' and no " , escapes as Python writes them
 * (\n \t \\ \x.. \u.... for what Python does not print), ints exactly as
 * written (any size), floats as the shortest repr that reads back (1.0, 0.1,
 * 1e-06, 1e+20, inf for 1e999). Unicode printability follows Python 3.11
 * (Unicode 14). Returns 0, or -1 when memory runs out (b->oom). */
int json_repr_python(const json_value *v, sbuf *b);
/* The same for str(): identical except that a string at the top is appended
 * as itself, unquoted (what Jinja's `value | string` gives). */
int json_str_python(const json_value *v, sbuf *b);

#endif
