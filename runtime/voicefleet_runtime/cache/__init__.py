"""A content-addressed result cache for both directions: in-process LRU, optional Redis."""
