// SPDX-License-Identifier: MIT
// small_copy: copies of a few bytes without a call into memcpy.
//
// Why: a response is assembled from short pieces (a status line, "Name: value" fields, a CRLF),
// and for a piece of a dozen bytes the call into libc's memcpy (through the PLT, then its size
// dispatch) costs more than the copy. Two moves of a fixed size that may overlap copy any
// length from one word to two words with no loop and no call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace squall::detail {

// Copies n bytes, for sizeof(Word) <= n <= 2 * sizeof(Word), as two words that may overlap.
template <class Word>
inline void copy_two_words(char* to, const char* from, std::size_t n) noexcept {
  Word first, last;
  std::memcpy(&first, from, sizeof(Word));
  std::memcpy(&last, from + n - sizeof(Word), sizeof(Word));
  std::memcpy(to, &first, sizeof(Word));
  std::memcpy(to + n - sizeof(Word), &last, sizeof(Word));
}

// Copies n bytes, inline up to 16 and through memcpy beyond. `from` may be null when n is 0
// (an empty string_view's data()), which memcpy must not be given.
inline void copy_small(char* to, const char* from, std::size_t n) noexcept {
  if (n > 16)
    std::memcpy(to, from, n);
  else if (n >= 8)
    copy_two_words<std::uint64_t>(to, from, n);
  else if (n >= 4)
    copy_two_words<std::uint32_t>(to, from, n);
  else
    for (std::size_t i = 0; i < n; ++i)
      to[i] = from[i];
}

}  // namespace squall::detail
