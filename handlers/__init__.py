"""Entry points: Starlette apps per route group (each wrapped by Mangum for Lambda), the
local server and the command line."""
