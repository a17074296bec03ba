"""The access-request web portal: the Starlette app, its security, its templates and its e-mail."""
