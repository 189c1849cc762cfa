// Render the OpenAPI document named by #swagger-ui's data-spec-url with Swagger UI.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  // eslint-disable-next-line no-undef
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    layout: "BaseLayout",
    // Operation ids are what generated clients call; show them.
    displayOperationId: true,
    defaultModelsExpandDepth: 1,
    // eslint-disable-next-line no-undef
    presets: [SwaggerUIBundle.presets.apis],
  });
});
