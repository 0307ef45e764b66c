// t/openapi.t: validates an OpenAPI document with swagger-parser (the
// OpenAPI 3.1 schema, then every $ref resolved).  Prints "valid" or the
// errors; exits non-zero when invalid.
'use strict';

const SwaggerParser = require('@apidevtools/swagger-parser');

const file = process.argv[2];

SwaggerParser.validate(file)
  .then((api) => {
    console.log(`valid: ${api.info.title} ${api.info.version}, OpenAPI ` +
                `${api.openapi}, ${Object.keys(api.paths).length} paths`);
  })
  .catch((err) => {
    console.log(`invalid: ${err.message}`);
    process.exit(1);
  });
