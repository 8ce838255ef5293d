/*
 * ws.c - Sec-WebSocket-Key and Sec-WebSocket-Accept (ws.h), with OpenSSL's
 * base64, SHA-1 and random generator.
 */
#include "ws.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int px_ws_key_ok(const char *k, size_t n)
{
    unsigned char raw[18];
    /* 16 bytes are 22 base64 characters and "==" */
    if (n != PX_WS_KEY_LEN || k[22] != '=' || k[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!b64_char((unsigned char)k[i]))
            return 0;
    return EVP_DecodeBlock(raw, (const unsigned char *)k, (int)n) == 18;
}

int px_ws_key_new(char *out)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, raw, sizeof(raw)) == PX_WS_KEY_LEN ? 0 : -1;
}

int px_ws_accept(const char *k, size_t n, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, k, n) == 1 &&
             EVP_DigestUpdate(ctx, ws_guid, sizeof(ws_guid) - 1) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == PX_WS_ACCEPT_LEN ? 0 : -1;
}
