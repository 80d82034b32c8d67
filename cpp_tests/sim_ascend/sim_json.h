/*
 * sim_json.h -- TEST INFRASTRUCTURE ONLY: a small strict JSON reader for the
 * simulated HCCL's rank-table parser (sim_hcomm.c). Objects, arrays, strings
 * (escapes kept verbatim except \" and \\), numbers, true/false/null. Depth and
 * size are bounded; anything malformed is a parse error.
 */
#ifndef SIM_JSON_H
#define SIM_JSON_H

#include <stdlib.h>
#include <string.h>

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
    enum jtype t;
    char *key;  /* member name inside an object */
    char *text; /* string contents, or the number / literal as written */
    struct jnode *kids;
    struct jnode *next;
};

struct jparser {
    const char *p;
    const char *end;
    int depth;
};

static void jfree(struct jnode *n)
{
    while (n != NULL) {
        struct jnode *next = n->next;
        jfree(n->kids);
        free(n->key);
        free(n->text);
        free(n);
        n = next;
    }
}

static void jws(struct jparser *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) {
        j->p++;
    }
}

static char *jstring(struct jparser *j)
{
    if (j->p >= j->end || *j->p != '"') {
        return NULL;
    }
    j->p++;
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    while (out != NULL && j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if ((unsigned char)c < 0x20) {
            free(out);
            return NULL;
        }
        if (c == '\\') {
            if (j->p >= j->end) {
                free(out);
                return NULL;
            }
            c = *j->p++;
            if (c != '"' && c != '\\' && c != '/') {
                free(out); /* rank tables carry no other escapes */
                return NULL;
            }
        }
        if (n + 1 >= cap) {
            cap *= 2;
            char *g = realloc(out, cap);
            if (g == NULL) {
                free(out);
                return NULL;
            }
            out = g;
        }
        out[n++] = c;
    }
    if (out == NULL || j->p >= j->end) {
        free(out);
        return NULL;
    }
    j->p++;
    out[n] = '\0';
    return out;
}

static struct jnode *jvalue(struct jparser *j);

static struct jnode *jnew(enum jtype t)
{
    struct jnode *n = calloc(1, sizeof(*n));
    if (n != NULL) {
        n->t = t;
    }
    return n;
}

static struct jnode *jcontainer(struct jparser *j, int obj)
{
    struct jnode *n = jnew(obj ? J_OBJ : J_ARR);
    if (n == NULL || ++j->depth > 32) {
        jfree(n);
        return NULL;
    }
    j->p++;
    struct jnode **tail = &n->kids;
    jws(j);
    if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
        j->p++;
        j->depth--;
        return n;
    }
    for (;;) {
        char *key = NULL;
        if (obj) {
            jws(j);
            key = jstring(j);
            jws(j);
            if (key == NULL || j->p >= j->end || *j->p != ':') {
                free(key);
                jfree(n);
                return NULL;
            }
            j->p++;
        }
        struct jnode *v = jvalue(j);
        if (v == NULL) {
            free(key);
            jfree(n);
            return NULL;
        }
        v->key = key;
        *tail = v;
        tail = &v->next;
        jws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == (obj ? '}' : ']')) {
            j->p++;
            j->depth--;
            return n;
        }
        jfree(n);
        return NULL;
    }
}

static struct jnode *jvalue(struct jparser *j)
{
    jws(j);
    if (j->p >= j->end) {
        return NULL;
    }
    char c = *j->p;
    if (c == '{' || c == '[') {
        return jcontainer(j, c == '{');
    }
    if (c == '"') {
        char *s = jstring(j);
        struct jnode *n = s != NULL ? jnew(J_STR) : NULL;
        if (n == NULL) {
            free(s);
            return NULL;
        }
        n->text = s;
        return n;
    }
    const char *start = j->p;
    while (j->p < j->end && (strchr("+-.eE", *j->p) != NULL || (*j->p >= '0' && *j->p <= '9') ||
                             (*j->p >= 'a' && *j->p <= 'z'))) {
        j->p++;
    }
    size_t len = (size_t)(j->p - start);
    enum jtype t;
    if (len == 4 && memcmp(start, "true", 4) == 0) {
        t = J_BOOL;
    } else if (len == 5 && memcmp(start, "false", 5) == 0) {
        t = J_BOOL;
    } else if (len == 4 && memcmp(start, "null", 4) == 0) {
        t = J_NULL;
    } else if (len > 0 && (start[0] == '-' || (start[0] >= '0' && start[0] <= '9'))) {
        t = J_NUM;
    } else {
        return NULL;
    }
    struct jnode *n = jnew(t);
    if (n == NULL || (n->text = strndup(start, len)) == NULL) {
        jfree(n);
        return NULL;
    }
    return n;
}

/* Parses a whole document (NULL on any error or trailing garbage). */
static struct jnode *jparse(const char *text, size_t len)
{
    struct jparser j = {text, text + len, 0};
    struct jnode *n = jvalue(&j);
    jws(&j);
    if (n != NULL && j.p != j.end) {
        jfree(n);
        return NULL;
    }
    return n;
}

static const struct jnode *jget(const struct jnode *obj, const char *key)
{
    if (obj == NULL || obj->t != J_OBJ) {
        return NULL;
    }
    for (const struct jnode *k = obj->kids; k != NULL; k = k->next) {
        if (strcmp(k->key, key) == 0) {
            return k;
        }
    }
    return NULL;
}

/* The string member `key` of `obj`, or NULL when absent or not a string. */
static const char *jstr(const struct jnode *obj, const char *key)
{
    const struct jnode *v = jget(obj, key);
    return v != NULL && v->t == J_STR ? v->text : NULL;
}

static size_t jlen(const struct jnode *arr)
{
    size_t n = 0;
    for (const struct jnode *k = arr != NULL ? arr->kids : NULL; k != NULL; k = k->next) {
        n++;
    }
    return n;
}

#endif
