"""The HTTP side: the REST API (Klein), the Host guard, origins and CORS, connection bounds, the site."""
