"""The API's docs page: ``/v1/docs`` renders ``/v1/openapi.json`` with Swagger UI.

Swagger UI's assets come from the ``flask-swagger-ui`` package installed with mentorflow, so
the page loads nothing from a CDN and works offline; the page runs only its own scripts.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, abort, current_app, render_template, send_from_directory

bp = Blueprint(
    "apidocs",
    __name__,
    url_prefix="/v1/docs",
    template_folder="templates",
    static_folder="static/apidocs",
    static_url_path="/page",
)

#: The files of Swagger UI's distribution the page uses (nothing else of the package is served).
SWAGGER_UI_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
# Swagger UI sets style attributes from script, hence 'unsafe-inline' for styles only; its
# "Try it out" calls the API on this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "object-src 'none'; frame-ancestors 'none'"
)


@bp.get("")
def docs_page() -> Response:
    """Render the OpenAPI document as a browsable page."""
    html = render_template("apidocs/docs.html", title=current_app.config["API_TITLE"])
    response = current_app.response_class(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/assets/<name>")
def swagger_ui_asset(name: str) -> Response:
    """Serve one of Swagger UI's files from the installed package."""
    if name not in SWAGGER_UI_ASSETS:
        abort(404)
    with resources.as_file(resources.files("flask_swagger_ui") / "dist") as folder:
        response = send_from_directory(folder, name, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
