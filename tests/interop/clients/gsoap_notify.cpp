// A gSOAP client of the Notify operation, built from proxy classes that
// wsdl2h + soapcpp2 generate from wsdl/<version>/AWSMechanicalTurkRequesterNotification.wsdl.
//
// usage: gsoap_notify ENDPOINT SIGNATURE TIMESTAMP VERSION EVENT_TYPE HIT_TYPE_ID HIT_ID ASSIGNMENT_ID
//
// TIMESTAMP is sent verbatim: the typemap (xsd__dateTime = | char* | char*) maps
// xsd:dateTime to char*, since the signature covers the exact text.
#include "soapAWSMechanicalTurkRequesterNotificationBindingProxy.h"
#include "AWSMechanicalTurkRequesterNotificationBinding.nsmap"

#include <iostream>
#include <string>

int main(int argc, char **argv) {
  if (argc != 9) {
    std::cerr << "usage: " << argv[0]
              << " ENDPOINT SIGNATURE TIMESTAMP VERSION EVENT_TYPE HIT_TYPE_ID HIT_ID ASSIGNMENT_ID\n";
    return 2;
  }
  AWSMechanicalTurkRequesterNotificationBindingProxy proxy(argv[1]);
  std::string signature = argv[2];
  std::string hit_type_id = argv[6];
  std::string hit_id = argv[7];
  std::string assignment_id = argv[8];

  ns1__Event event;
  event.EventType = argv[5];
  event.EventTime = argv[3];
  event.HITTypeId = &hit_type_id;
  event.HITId = &hit_id;
  event.AssignmentId = &assignment_id;

  _ns1__Notify request;
  request.Signature = &signature;
  request.Timestamp = argv[3];
  request.Version = argv[4];
  request.Event.push_back(&event);

  _ns1__NotifyResponse response;
  if (proxy.Notify(&request, response) != SOAP_OK) {
    proxy.soap_stream_fault(std::cerr);
    proxy.destroy();
    return 1;
  }
  std::cout << "Notify OK" << std::endl;
  proxy.destroy();
  return 0;
}
