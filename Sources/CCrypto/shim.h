#pragma once
// SHA-256 from OpenSSL's libcrypto (Debian libssl-dev), for provenance hashes of checkpoints and data.
#include <openssl/evp.h>
#include <openssl/sha.h>
